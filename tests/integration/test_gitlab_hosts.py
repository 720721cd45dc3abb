"""Self-managed GitLab: a path prefix, a private CA, and approvals where offered."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.fakes.tls import make_ca_and_server_cert
from tests.integration.agent import make_setup


def test_path_prefix(
    tmp_path: Path, db_url: str, receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    with FakeGitLab(prefix="/gitlab") as gitlab:
        agent = make_setup(tmp_path, db_url, gitlab, receiver, receiver_keys)

        completed = agent.run("sync")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert gitlab.url.endswith("/gitlab")
    assert len(receiver.records("pull_requests")) == 24
    keys = {r.record["key"].split("/", 1)[1] for r in receiver.records("repositories")}
    assert "gitlab-data/snowflake_spend" in keys


def test_private_ca_bundle(
    tmp_path: Path, db_url: str, receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    with FakeGitLab(tls=(cert, key)) as gitlab:
        agent = make_setup(tmp_path, db_url, gitlab, receiver, receiver_keys)
        without_ca = agent.run("fetch")
        agent.config["integrations"]["gitlab"]["ca_bundle"] = str(ca)
        with_ca = agent.run("sync")

    assert without_ca.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in without_ca.stderr
    assert with_ca.returncode == 0, with_ca.stderr[-2000:]
    assert len(receiver.records("pull_requests")) == 24


def test_missing_ca_bundle_file(
    tmp_path: Path,
    db_url: str,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
    fake_gitlab: FakeGitLab,
) -> None:
    agent = make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
    agent.config["integrations"]["gitlab"]["ca_bundle"] = str(tmp_path / "nope.pem")

    completed = agent.run("fetch")

    assert completed.returncode == 2
    assert "integrations.gitlab.ca_bundle" in completed.stderr


def test_approvals_api_adds_events(
    tmp_path: Path, db_url: str, receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    with FakeGitLab(approvals="from_notes") as gitlab:
        gitlab.add_merge_request({"title": "Approved without a note"})
        mr = max(
            gitlab.project("gitlab-data/snowflake_spend").merge_requests.values(),
            key=lambda m: m["iid"],
        )
        approver = {"id": 90000099, "username": "user-99", "name": "User 99"}
        gitlab.add_note(
            mr["iid"],
            {"system": True, "author": approver, "body": "approved this merge request"},
        )
        agent = make_setup(tmp_path, db_url, gitlab, receiver, receiver_keys)

        completed = agent.run("sync")
        approval_requests = gitlab.request_count(r"/approvals$")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert approval_requests == 25
    approvals = [
        r.record
        for r in receiver.records("pull_request_events")
        if r.record["type"] == "approved"
        and r.record["pull_request_id"] == str(mr["id"])
    ]
    # The note already gives the approval: the approvals API does not add a second.
    assert len(approvals) == 1
    assert approvals[0]["actor_id"] == "90000099"
