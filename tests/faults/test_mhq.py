"""MHQ down, refusing or rejecting: each response handled as agreed with MHQ.

400 and 401 have their own tests in tests/integration/test_push.py; these cover an
outage over several push runs, 422, 403, 404, 410, a record too large for MHQ, and
the retryable statuses.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.faults.support import (
    SecretSearch,
    host_of,
    query,
    sent_twice,
)
from tests.integration.agent import AgentSetup, log_events

TOTAL_RECORDS = 161


def _status(agent: AgentSetup) -> dict:
    return json.loads(agent.run("status", "--json").stdout)


def _delivery_order(db_url: str) -> list[str]:
    """Return delivered batch ids in the order the outbox requires them to arrive."""
    rows = query(
        db_url,
        "SELECT id::text FROM outbox_batches WHERE status = 'delivered' "
        "ORDER BY COALESCE(order_seq, seq), order_path",
    )
    return [row[0] for row in rows]


def _fetch(agent: AgentSetup) -> None:
    completed = agent.run("fetch")
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_outage_keeps_backlog_in_order(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab, db_url: str
) -> None:
    agent.config["push"].update({"max_batch_records": 40, "retry_budget_s": 2})
    _fetch(agent)
    receiver.refuse_connections()
    refused = [agent.run("push").returncode for _ in range(2)]
    added = fake_gitlab.add_merge_request({"title": "Written during the outage"})
    _fetch(agent)
    during = _status(agent)["backlog"]
    receiver.accept_connections()
    receiver.enqueue(503, headers={"Retry-After": "1"}, times=10)
    unavailable = agent.run("push")
    receiver.reset()
    recovered = agent.run("push")

    order = [batch.message_id for batch in receiver.batches()]
    titles = [r.record["title"] for r in receiver.records("pull_requests")]
    assert refused == [1, 1]
    assert during["pending_batches"] == 5
    assert during["unqueued_records"] == 1
    assert unavailable.returncode == 1
    assert "push stopped" in {e["event"] for e in log_events(unavailable)}
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    assert order == _delivery_order(db_url)
    assert len(receiver.records()) == TOTAL_RECORDS + 1
    assert titles[-1] == added["title"]
    assert sent_twice(receiver) == []


def test_422_kept_until_retry_rejected(
    agent: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    agent.config["push"]["max_batch_records"] = 100
    _fetch(agent)
    receiver.enqueue(422, body={"error": "unprocessable record"})

    rejected = agent.run("push")
    again = agent.run("push")
    backlog = _status(agent)["backlog"]
    heartbeat = agent.run("heartbeat")
    reported = receiver.heartbeats()[-1].data["backlog"]
    resent = agent.run("push", "--retry-rejected")

    batch_attempts = [
        a for a in receiver.attempts() if a.message_type != "agent.heartbeat"
    ]
    assert rejected.returncode == 1
    assert again.returncode == 0
    assert [a.status for a in batch_attempts] == [422, 200, 200]
    assert backlog["rejected_batches"] == 1
    assert backlog["rejected_records"] == 100
    assert heartbeat.returncode == 0
    assert reported["rejected_batches"] == 1
    assert reported["rejected_records"] == 100
    assert resent.returncode == 0
    assert batch_attempts[0].webhook_id == batch_attempts[-1].webhook_id
    assert len(receiver.records()) == TOTAL_RECORDS
    assert _status(agent)["backlog"]["rejected_batches"] == 0


@pytest.mark.parametrize("status", [403, 404, 410])
def test_stop_status_keeps_everything(
    agent: AgentSetup, receiver: Receiver, db_url: str, status: int
) -> None:
    agent.config["push"]["max_batch_records"] = 50
    _fetch(agent)
    receiver.enqueue(status)

    stopped = agent.run("push")
    backlog = _status(agent)["backlog"]
    resumed = agent.run("push")

    attempts = receiver.attempts()
    stop_lines = [e for e in log_events(stopped) if e["event"] == "push stopped"]
    assert stopped.returncode == 1
    assert [a.status for a in attempts[:2]] == [status, 200]
    assert attempts[0].webhook_id == attempts[1].webhook_id
    assert f"MHQ answered {status}" in stop_lines[0]["reason"]
    assert backlog["pending_batches"] == 4
    assert resumed.returncode == 0
    assert [b.message_id for b in receiver.batches()] == _delivery_order(db_url)
    assert len(receiver.records()) == TOTAL_RECORDS


def test_record_too_large_for_mhq_rejected_alone(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver_keys: ReceiverKeys,
    secret_search: SecretSearch,
    db_url: str,
) -> None:
    keys = receiver_keys
    small = Receiver(
        keys.private_pem, keys.client_secret, keys.client_id, max_body_bytes=20_000
    )
    huge = fake_gitlab.add_merge_request({"title": secrets.token_hex(40_000)})
    agent.config["push"]["max_batch_records"] = 40
    with small:
        agent.config["mhq"]["webhook_url"] = small.url
        _fetch(agent)
        first = agent.run("push")
        second = agent.run("push")
    for message in small.messages():
        secret_search.add("decrypted batch", json.dumps(message.envelope))

    backlog = _status(agent)["backlog"]
    received = {(r.entity, r.record["id"]) for r in small.records()}
    order = [batch.message_id for batch in small.batches()]
    assert first.returncode == 1
    assert second.returncode == 0
    assert ("pull_requests", str(huge["id"])) not in received
    assert len(received) == TOTAL_RECORDS
    assert backlog["rejected_batches"] == 1
    assert backlog["rejected_records"] == 1
    assert order == _delivery_order(db_url)
    assert "single-record batch too large for MHQ" in {
        e["event"] for e in log_events(first)
    }


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 504])
def test_retryable_status_honours_retry_after(
    agent: AgentSetup, receiver: Receiver, status: int
) -> None:
    _fetch(agent)
    receiver.enqueue(status, headers={"Retry-After": "1"})

    completed = agent.run("push")

    attempts = receiver.attempts()
    retries = [e for e in log_events(completed) if e["event"] == "push retry"]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [a.status for a in attempts] == [status, 200]
    assert attempts[0].webhook_id == attempts[1].webhook_id
    assert attempts[1].received_at - attempts[0].received_at >= 0.9
    assert retries[0]["retry_in_s"] == 1
    assert len(receiver.records()) == TOTAL_RECORDS


def test_heartbeat_reports_outage_backlog(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    agent.config["push"]["retry_budget_s"] = 1
    _fetch(agent)
    receiver.refuse_connections()
    assert agent.run("push").returncode == 1
    failed = agent.run("heartbeat")
    receiver.accept_connections()

    sent = agent.run("heartbeat")

    data = receiver.heartbeats()[-1].data
    assert failed.returncode == 1
    assert "heartbeat failed" in {e["event"] for e in log_events(failed)}
    assert sent.returncode == 0
    assert data["backlog"]["pending_batches"] == 1
    assert data["backlog"]["unsent_records"] == TOTAL_RECORDS
    assert data["jobs"]["push"]["last_status"] == "failed"
    assert host_of(fake_gitlab) in json.dumps(data["repositories"])
