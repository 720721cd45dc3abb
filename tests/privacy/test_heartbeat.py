"""Heartbeats hide what records hide: repository keys and error texts."""

from __future__ import annotations

import psycopg2
import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup
from tests.privacy.support import configure

WITHHELD = "withheld: the privacy policy hides names this text may contain"


def test_keys_match_repository_records(agent: AgentSetup, receiver: Receiver) -> None:
    configure(agent, "pseudonymise-all")
    assert agent.run("sync").returncode == 0

    assert agent.run("heartbeat").returncode == 0

    [heartbeat] = receiver.heartbeats()
    keys = set(heartbeat.data["repositories"])
    assert keys == {r.record["key"] for r in receiver.records("repositories")}
    assert all(key.startswith("p_") for key in keys)


def test_redacted_keys_use_ids(agent: AgentSetup, receiver: Receiver) -> None:
    configure(agent, "redact-all")
    assert agent.run("sync").returncode == 0

    assert agent.run("heartbeat").returncode == 0

    [heartbeat] = receiver.heartbeats()
    expected = {
        f"{r.provider}:{r.record['id']}" for r in receiver.records("repositories")
    }
    assert set(heartbeat.data["repositories"]) == expected


def test_error_text_withheld(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    configure(agent, "people")
    fake_gitlab.add_fault(r"/projects/12345678/merge_requests$", status=500, times=None)
    agent.config["http"]["retry_budget_s"] = 1
    assert agent.run("sync").returncode == 1

    assert agent.run("heartbeat").returncode == 0

    [heartbeat] = receiver.heartbeats()
    errors = [r["error"] for r in heartbeat.data["repositories"].values() if r["error"]]
    assert errors
    assert all(e["message"] == WITHHELD and e["code"] for e in errors)


@pytest.mark.parametrize(
    ("policy", "provider"),
    [
        pytest.param("pseudonymise-all", "gitlab", id="pseudonym"),
        pytest.param("people", "bitbucket", id="username-in-key"),
        pytest.param("redact-all", "gitlab", id="redacted-label"),
    ],
)
def test_resync_maps_keys_back(
    agent: AgentSetup, receiver: Receiver, db_url: str, policy: str, provider: str
) -> None:
    configure(agent, policy)
    assert agent.run("sync").returncode == 0
    [repository] = [
        r for r in receiver.records("repositories") if r.provider == provider
    ][:1]
    sent_key = repository.record["key"] or f"{provider}:{repository.record['id']}"
    receiver.queue_commands(
        [
            {
                "id": "cmd-privacy-1",
                "command": "resync",
                "parameters": {"repositories": [sent_key]},
            }
        ]
    )

    completed = agent.run("heartbeat")

    assert completed.returncode == 0, completed.stderr[-3000:]
    with psycopg2.connect(db_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT parameters, result FROM commands WHERE id = 'cmd-privacy-1'"
        )
        parameters, result = cursor.fetchone()
        cursor.execute(
            "SELECT repository_key FROM records WHERE entity = 'repositories' "
            "AND provider = %s AND payload->>'id' = %s",
            (provider, repository.record["id"]),
        )
        [(stored_key,)] = cursor.fetchall()
    conn.close()
    assert "p_" in sent_key or ":" in sent_key
    assert parameters["repositories"] == [stored_key]
    assert result["records_to_resend"] > 0
