"""``mhq-agent audit``: every request MHQ received is in the local audit log."""

from __future__ import annotations

import json
from typing import Any

import psycopg2

from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup
from tests.privacy.support import KEY, configure


def audit(agent: AgentSetup, *args: str) -> list[dict[str, Any]]:
    completed = agent.run("audit", "--json", *args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line]


def gitlab_only(agent: AgentSetup) -> None:
    """Leave Bitbucket out, so that one batch carries every record."""
    del agent.config["integrations"]["bitbucket"]


def test_every_attempt_audited(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["push"]["max_batch_records"] = 60
    receiver.enqueue(503, headers={"Retry-After": "0"})
    assert agent.run("sync").returncode == 0
    assert agent.run("heartbeat").returncode == 0

    entries = audit(agent)

    attempts = receiver.attempts()
    assert len(attempts) == len(entries) >= 4
    by_hash = {entry["ciphertext_sha256"]: entry for entry in entries}
    for attempt in attempts:
        entry = by_hash[attempt.body_sha256]
        assert entry["message_id"] == attempt.webhook_id
        assert entry["status"] == attempt.status
        assert entry["body_bytes"] == attempt.body_size
        assert entry["type"] == attempt.message_type


def test_audit_hashes_match_messages(agent: AgentSetup, receiver: Receiver) -> None:
    gitlab_only(agent)
    receiver.enqueue(503, headers={"Retry-After": "0"})
    assert agent.run("sync").returncode == 0

    entries = audit(agent, "--type", "sync.batch")

    [first, second] = entries
    assert first["message_id"] == second["message_id"]
    assert first["plaintext_sha256"] == second["plaintext_sha256"]
    assert first["ciphertext_sha256"] != second["ciphertext_sha256"]
    [message] = receiver.batches()
    assert second["ciphertext_sha256"] == message.body_sha256
    assert second["record_count"] == len(receiver.records())
    assert sum(second["counts"].values()) == second["record_count"]
    assert second["provider"] == "gitlab"


def test_audit_filters(agent: AgentSetup, receiver: Receiver) -> None:
    gitlab_only(agent)
    receiver.enqueue(503, headers={"Retry-After": "0"})
    assert agent.run("sync").returncode == 0
    assert agent.run("heartbeat").returncode == 0
    [batch] = receiver.batches()

    heartbeats = audit(agent, "--type", "agent.heartbeat")
    refused = audit(agent, "--status", "503")
    one_message = audit(agent, "--id", batch.message_id)
    future = audit(agent, "--since", "2999-01-01T00:00:00Z")
    newest = audit(agent, "--limit", "1")

    assert [e["type"] for e in heartbeats] == ["agent.heartbeat"]
    assert [e["status"] for e in refused] == [503]
    assert [e["status"] for e in one_message] == [503, 200]
    assert future == []
    assert newest == heartbeats


def test_network_error_audited(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["push"]["retry_budget_s"] = 1
    assert agent.run("fetch").returncode == 0
    receiver.refuse_connections()

    assert agent.run("push").returncode == 1

    entries = audit(agent, "--status", "0")
    assert entries
    assert all(e["status"] is None and e["error"] for e in entries)


def test_audit_text_lists_attempts(agent: AgentSetup, receiver: Receiver) -> None:
    gitlab_only(agent)
    assert agent.run("sync").returncode == 0

    completed = agent.run("audit")

    [batch] = receiver.batches()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert batch.message_id in completed.stdout
    assert batch.body_sha256 in completed.stdout
    assert "1 attempt(s)" in completed.stdout


def test_pseudonym_lookup(agent: AgentSetup, receiver: Receiver) -> None:
    configure(agent, "pseudonymise-all")
    assert agent.run("sync").returncode == 0
    [user] = [
        r.record
        for r in receiver.records("users")
        if r.provider == "gitlab" and r.record["id"]
    ][:1]

    found = agent.run("audit", "--pseudonym", user["username"])
    as_json = agent.run("audit", "--pseudonym", user["id"], "--json")
    missing = agent.run("audit", "--pseudonym", "p_" + "0" * 24)

    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.startswith("username: ")
    original = found.stdout.split(": ", 1)[1].strip()
    assert original and not original.startswith("p_")
    details = json.loads(as_json.stdout)
    assert details["kind"] == "user_id"
    assert details["pseudonym"] == user["id"]
    assert KEY not in as_json.stdout
    assert len(details["key_id"]) == 12
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_key_not_stored_or_logged(
    agent: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    configure(agent, "pseudonymise-all")
    agent.env["LOG_LEVEL"] = "DEBUG"

    outputs = [agent.run("sync"), agent.run("heartbeat"), agent.run("preview")]
    outputs.append(agent.run("audit", "--json"))

    assert [completed.returncode for completed in outputs] == [0, 0, 0, 0]
    for completed in outputs:
        assert KEY not in completed.stdout
        assert KEY not in completed.stderr
    with psycopg2.connect(db_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pseudonyms WHERE strpos(original, %s) > 0 "
            "OR strpos(key_id, %s) > 0",
            (KEY, KEY),
        )
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT count(*) FROM pseudonyms")
        assert cursor.fetchone()[0] > 50
    conn.close()
