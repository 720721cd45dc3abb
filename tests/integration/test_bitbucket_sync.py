"""``mhq-agent sync`` against the fake Bitbucket Cloud, alone and beside GitLab."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.integration import expected_bitbucket as expected
from tests.integration.agent import AgentSetup, add_bitbucket, log_events, make_setup

ACTIVITY = r"/pullrequests/activity$"


@pytest.fixture
def bitbucket_agent(
    tmp_path: Path,
    db_url: str,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    """An agent with only the fake Bitbucket's repository configured."""
    setup = make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
    del setup.config["integrations"]["gitlab"]
    add_bitbucket(setup, fake_bitbucket)
    return setup


@pytest.fixture
def synced(bitbucket_agent: AgentSetup, receiver: Receiver) -> Receiver:
    completed = bitbucket_agent.run("sync")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return receiver


def _records(receiver: Receiver, entity: str) -> dict[str, dict]:
    return {r.record["id"]: r.record for r in receiver.records(entity, "bitbucket")}


def test_pull_requests_mapped(synced: Receiver) -> None:
    received = _records(synced, "pull_requests")
    fixtures = expected.load("pull_requests.json")
    assert len(received) == len(fixtures) == 57
    for raw in fixtures:
        record = received[expected.pr_id(raw["id"])]
        assert record["number"] == raw["id"]
        assert record["repository_id"] == expected.REPOSITORY_UUID
        assert record["title"] == raw["title"]
        assert record["state"] == expected.STATE[raw["state"]]
        assert record["author_id"] == raw["author"]["account_id"]
        assert record["created_at"] == expected.utc(raw["created_on"])
        assert record["updated_at"] == expected.utc(raw["updated_on"])
        assert record["source_branch"] == raw["source"]["branch"]["name"]
        assert record["target_branch"] == raw["destination"]["branch"]["name"]
        assert record["head_sha"] == raw["source"]["commit"]["hash"]
        merge_commit = (raw.get("merge_commit") or {}).get("hash")
        assert record["merge_commit_sha"] == merge_commit
        closed_by = raw.get("closed_by") or {}
        merged = raw["state"] == "MERGED"
        assert record["merged_by_id"] == (
            closed_by.get("account_id") if merged else None
        )
        assert record["web_url"].endswith(
            f"/user-38/user-38php/pull-requests/{raw['id']}"
        )
        assert record["draft"] is None
        assert record["additions"] is None


def test_commits_mapped(synced: Receiver, fake_bitbucket: FakeBitbucket) -> None:
    received = {r["id"]: r for r in _records(synced, "pull_request_commits").values()}
    fixtures = expected.load("pull_request_commits.json")
    assert len(received) == len(fixtures) == 8
    for raw in fixtures:
        record = received[raw["hash"]]
        name = raw["author"]["raw"].split("<")[0].strip()
        assert record["pull_request_id"] == expected.pr_id(3)
        assert record["author_name"] == name
        assert record["author_id"] == (raw["author"].get("user") or {}).get(
            "account_id"
        )
        assert record["authored_at"] == expected.utc(raw["date"])
        # The fake serves links in texts on its own address.
        title = raw["message"].strip().split("\n")[0]
        title = title.replace("https://bitbucket.org", fake_bitbucket.web_url)
        assert record["title"] == title
    assert "@" not in json.dumps(list(received.values()))


def test_comments_become_events(synced: Receiver) -> None:
    events = _records(synced, "pull_request_events")
    comments = expected.load("pull_request_comments.json")
    for raw in comments:
        record = events[f"comment:{raw['id']}"]
        assert record["type"] == "review_comment"
        assert record["pull_request_id"] == expected.pr_id(raw["pullrequest"]["id"])
        assert record["actor_id"] == raw["user"]["account_id"]
        assert record["created_at"] == expected.utc(raw["created_on"])
    text = json.dumps([m.envelope for m in synced.batches()], ensure_ascii=False)
    assert all(raw["content"]["raw"] not in text for raw in comments)
    assert '"path"' not in text
    assert '"inline"' not in text


def test_pipelines_and_deployments_mapped(synced: Receiver) -> None:
    received = _records(synced, "deployments")
    for raw in expected.load("pipelines.json"):
        record = received[raw["uuid"]]
        assert record["source"] == "pipeline"
        assert record["status"] == expected.PIPELINE_STATUS[expected.pipeline_key(raw)]
        assert record["ref"] == raw["target"]["ref_name"]
        assert record["sha"] == raw["target"]["commit"]["hash"]
        assert record["created_at"] == expected.utc(raw["created_on"])
        assert record["finished_at"] == expected.utc(raw.get("completed_on"))
    for raw in expected.load("deployments.json"):
        record = received[raw["uuid"]]
        assert record["source"] == "deployment"
        assert record["environment"] == raw["environment"]["name"]
        assert record["status"] == expected.DEPLOYMENT_STATUS[raw["state"]["name"]]
        assert record["sha"] == raw["release"]["commit"]["hash"]
        assert record["started_at"] == expected.utc(raw["state"].get("started_on"))
        assert record["finished_at"] == expected.utc(raw["state"].get("completed_on"))


def test_repository_mapped(synced: Receiver, fake_bitbucket: FakeBitbucket) -> None:
    [record] = _records(synced, "repositories").values()
    host = fake_bitbucket.web_url.split("://", 1)[1]
    assert record["id"] == expected.REPOSITORY_UUID
    assert record["key"] == f"{host}/user-38/user-38php"
    assert record["name"] == "user-38php"
    assert record["namespace"] == "user-38"
    assert record["default_branch"] == "master"


def test_unchanged_sync_sends_nothing(
    synced: Receiver, bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket
) -> None:
    fake_bitbucket.reset_log()

    completed = bitbucket_agent.run("sync")

    assert completed.returncode == 0
    assert len(synced.batches()) == 1
    # One list request per stream; the repository stream reuses the lookup.
    assert fake_bitbucket.request_count() <= 5
    assert fake_bitbucket.request_count(r"/commits$") == 0


def test_review_changes_sent_once(
    synced: Receiver, bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket
) -> None:
    fake_bitbucket.approve(40, "user-38")
    fake_bitbucket.request_changes(41, "user-38")
    fake_bitbucket.merge(42, "user-38")
    assert bitbucket_agent.run("sync").returncode == 0
    fake_bitbucket.unapprove(40, "user-38", bump_updated_on=True)
    assert bitbucket_agent.run("sync").returncode == 0
    assert bitbucket_agent.run("sync").returncode == 0

    events = [r.record for r in synced.records("pull_request_events")]
    kinds = Counter((e["pull_request_id"].rsplit(":", 1)[1], e["type"]) for e in events)
    assert kinds[("40", "approved")] == 1
    assert kinds[("41", "changes_requested")] == 1
    assert kinds[("42", "merged")] == 1
    assert kinds[("40", "unapproved")] == 1
    merged = [
        r.record for r in synced.records("pull_requests") if r.record["number"] == 42
    ]
    assert merged[-1]["state"] == "merged"
    assert merged[-1]["merged_at"] is not None
    deletions = [r.record for r in synced.records("deletions")]
    assert [d["entity"] for d in deletions] == ["pull_request_events"]
    assert len(synced.batches()) == 3


def test_invalid_token_named(
    bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket
) -> None:
    fake_bitbucket.set_token("another-token")

    completed = bitbucket_agent.run("fetch")
    status = json.loads(bitbucket_agent.run("status", "--json").stdout)

    assert completed.returncode == 1
    assert "rejected the access token (401)" in completed.stderr
    assert status["repositories"][0]["error"]["code"] == "unauthorized"
    assert "bb-test-token" not in completed.stderr


def test_missing_scope_named(
    bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket
) -> None:
    fake_bitbucket.set_scopes(["repository"])

    completed = bitbucket_agent.run("fetch")
    status = json.loads(bitbucket_agent.run("status", "--json").stdout)

    repository = status["repositories"][0]
    assert completed.returncode == 1
    assert repository["status"] == "partial"
    assert "required scopes: pullrequest" in repository["error"]["message"]
    assert repository["error"]["code"] == "forbidden"


def test_missing_repository_named(
    bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket
) -> None:
    bitbucket_agent.config["integrations"]["bitbucket"]["repositories"].append(
        f"{fake_bitbucket.web_url}/user-38/gone"
    )

    completed = bitbucket_agent.run("sync")
    status = json.loads(bitbucket_agent.run("status", "--json").stdout)

    states = {r["repository"].rsplit("/", 1)[1]: r for r in status["repositories"]}
    assert completed.returncode == 1
    assert states["user-38php"]["status"] == "ok"
    assert states["gone"]["error"]["code"] == "not_found"


def test_429_storm_fails_only_bitbucket(
    bitbucket_agent: AgentSetup,
    fake_bitbucket: FakeBitbucket,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
) -> None:
    bitbucket_agent.config["integrations"]["gitlab"] = {
        "domain_url": fake_gitlab.url,
        "access_token": "glpat-test-token",
        "repositories": [f"{fake_gitlab.url}/gitlab-data/snowflake_spend"],
    }
    bitbucket_agent.config["http"] = {"retry_budget_s": 3}
    fake_bitbucket.add_fault(r"/pullrequests$", status=429, times=None)

    started = time.monotonic()
    completed = bitbucket_agent.run("sync")
    elapsed = time.monotonic() - started

    retries = [e for e in log_events(completed) if e["event"] == "http retry"]
    assert completed.returncode == 1
    assert elapsed < 30
    assert retries
    assert len(receiver.records("pull_requests", "gitlab")) == 24
    assert len(receiver.records("pull_request_events", "bitbucket")) == 75
    assert receiver.records("pull_requests", "bitbucket") == []


def test_both_providers_in_one_sync(
    bitbucket_agent: AgentSetup, fake_gitlab: FakeGitLab, receiver: Receiver
) -> None:
    bitbucket_agent.config["integrations"]["gitlab"] = {
        "domain_url": fake_gitlab.url,
        "access_token": "glpat-test-token",
        "repositories": [
            f"{fake_gitlab.url}/gitlab-data/snowflake_spend",
            f"{fake_gitlab.url}/merico-dev",
        ],
    }

    completed = bitbucket_agent.run("sync")

    assert completed.returncode == 0, completed.stderr[-2000:]
    providers = {b.data["provider"] for b in receiver.batches()}
    gitlab = Counter(r.entity for r in receiver.records(provider="gitlab"))
    bitbucket = Counter(r.entity for r in receiver.records(provider="bitbucket"))
    assert providers == {"gitlab", "bitbucket"}
    assert gitlab["pull_requests"] == 24
    assert gitlab["deployments"] == 53
    assert bitbucket["pull_requests"] == 57
    assert bitbucket["deployments"] == 49
    assert bitbucket["pull_request_commits"] == 8


def test_check_reports_bitbucket(
    bitbucket_agent: AgentSetup, fake_bitbucket: FakeBitbucket, receiver: Receiver
) -> None:
    good = bitbucket_agent.run("check")
    fake_bitbucket.set_scopes(["repository", "pullrequest"])
    missing_scope = bitbucket_agent.run("check")

    assert good.returncode == 0, good.stdout + good.stderr[-2000:]
    assert "bitbucket token" in good.stdout
    assert "user-38php" in good.stdout
    assert missing_scope.returncode == 1
    assert "required scopes: pipeline" in missing_scope.stdout
    assert receiver.attempts() == []
