"""``mhq-agent check``: one line per check, exit 0, 1 or 2, nothing stored or sent."""

from __future__ import annotations

import subprocess

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import make_rsa_keypair
from tests.fakes.receiver import Receiver
from tests.faults.support import query
from tests.integration.agent import AgentSetup


def _lines(completed: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Map each check name, such as 'gitlab token', to its line of the report."""
    found = {}
    for line in completed.stdout.splitlines():
        status, _, rest = line.partition("  ")
        name = rest.strip().split(": ", 1)[0]
        if status.strip() in ("ok", "FAILED"):
            found[name] = line
    return found


def _tables(db_url: str) -> list[str]:
    rows = query(
        db_url,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public'",
    )
    return [row[0] for row in rows]


def test_all_pass_nothing_stored(
    agent: AgentSetup, fake_gitlab: FakeGitLab, receiver: Receiver, db_url: str
) -> None:
    completed = agent.run("check")

    lines = _lines(completed)
    host = f"127.0.0.1:{fake_gitlab.port}"
    assert completed.returncode == 0, completed.stdout + completed.stderr[-2000:]
    assert all(line.startswith("ok") for line in lines.values())
    assert "RSA 2048 bits" in lines["mhq public key"]
    assert "not migrated yet" in lines["database"]
    assert "scopes read_api" in lines["gitlab token"]
    for project in ("gitlab-data/snowflake_spend", "merico-dev/ee/charts"):
        assert f"gitlab repository {host}/{project}" in lines
    assert "reachable" in lines["mhq webhook"]
    assert completed.stdout.strip().endswith("all ok")
    assert _tables(db_url) == []
    assert receiver.attempts() == []
    assert {r.method for r in fake_gitlab.requests()} == {"GET"}


def test_token_without_read_api_fails(
    agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    fake_gitlab.token_scopes = ("read_user", "read_repository")

    completed = agent.run("check")

    line = _lines(completed)["gitlab token"]
    assert completed.returncode == 1
    assert line.startswith("FAILED")
    assert "read_repository, read_user do not include read_api" in line


def test_hidden_scopes_use_user(agent: AgentSetup, fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(r"/personal_access_tokens/self$", status=404)

    completed = agent.run("check")

    line = _lines(completed)["gitlab token"]
    assert completed.returncode == 0, completed.stdout
    assert line.startswith("ok")
    assert "accepted for user mhq-agent-bot" in line
    assert fake_gitlab.request_count(r"^/api/v4/user$") == 1


def test_revoked_token_fails(agent: AgentSetup, fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.set_token("glpat-someone-else")

    completed = agent.run("check")

    lines = _lines(completed)
    assert completed.returncode == 1
    assert lines["gitlab token"].startswith("FAILED")
    assert "401" in lines["gitlab token"]
    assert not any(name.startswith("gitlab repository") for name in lines)


def test_unknown_repository_fails_alone(
    agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    missing = fake_gitlab.project_url("gitlab-data/does-not-exist")
    agent.config["integrations"]["gitlab"]["repositories"].append(missing)

    completed = agent.run("check")

    lines = _lines(completed)
    repositories = [line for name, line in lines.items() if "repository" in name]
    assert completed.returncode == 1
    assert lines[f"gitlab repository {missing}"].startswith("FAILED")
    assert sum(line.startswith("ok") for line in repositories) == 3


def test_mhq_unreachable_fails(agent: AgentSetup, receiver: Receiver) -> None:
    receiver.refuse_connections()

    completed = agent.run("check")

    line = _lines(completed)["mhq webhook"]
    assert completed.returncode == 1
    assert line.startswith("FAILED")
    assert "unreachable" in line


def test_database_unreachable_fails(agent: AgentSetup) -> None:
    agent.config["database_url"] = "postgresql://mhq@127.0.0.1:9/none"

    completed = agent.run("check")

    line = _lines(completed)["database"]
    assert completed.returncode == 1
    assert line.startswith("FAILED")
    assert "cannot connect to Postgres" in line


def test_weak_public_key_exits_2(agent: AgentSetup, receiver: Receiver) -> None:
    _, weak = make_rsa_keypair(1024)
    agent.config["mhq"]["public_key"] = weak

    completed = agent.run("check")

    assert completed.returncode == 2
    assert "mhq.public_key" in completed.stderr
    assert "RSA of 1024 bits" in completed.stderr
    assert receiver.attempts() == []


def test_missing_setting_exits_2(
    agent: AgentSetup, fake_gitlab: FakeGitLab, receiver: Receiver
) -> None:
    del agent.config["mhq"]["client_secret"]

    completed = agent.run("check")

    lines = _lines(completed)
    assert completed.returncode == 2
    assert lines["configuration for push and heartbeat"].startswith("FAILED")
    assert "mhq.client_secret" in lines["configuration for push and heartbeat"]
    assert lines["configuration for fetch"].startswith("ok")
    assert fake_gitlab.request_count() == 0
    assert receiver.attempts() == []
