"""Push: every MHQ response status handled as agreed, nothing lost or sent twice."""

from __future__ import annotations

import json
from collections import Counter

from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, log_events

TOTAL_RECORDS = 161


def _fetch(agent: AgentSetup) -> None:
    completed = agent.run("fetch")
    assert completed.returncode == 0, completed.stderr[-2000:]


def _status(agent: AgentSetup) -> dict:
    return json.loads(agent.run("status", "--json").stdout)


def test_retry_after_503_keeps_webhook_id(
    agent: AgentSetup, receiver: Receiver
) -> None:
    _fetch(agent)
    receiver.enqueue(503, headers={"Retry-After": "1"})

    completed = agent.run("push")

    attempts = receiver.attempts()
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [a.status for a in attempts] == [503, 200]
    assert attempts[0].webhook_id == attempts[1].webhook_id
    assert attempts[1].received_at - attempts[0].received_at >= 0.9
    assert len(receiver.records()) == TOTAL_RECORDS


def test_413_splits_batch(agent: AgentSetup, receiver: Receiver) -> None:
    _fetch(agent)
    receiver.enqueue(413)

    completed = agent.run("push")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(receiver.batches()) == 2
    assert len(receiver.records()) == TOTAL_RECORDS
    ids = [a.webhook_id for a in receiver.attempts()]
    assert len(set(ids)) == 3
    assert "batch too large (413), split in two" in {
        e["event"] for e in log_events(completed)
    }


def test_413_split_keeps_order(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["push"]["max_batch_records"] = 40
    _fetch(agent)
    receiver.enqueue(413)

    assert agent.run("push").returncode == 0

    # Records arrive in the order they were queued, whatever the split did.
    order = [(r.entity, r.record["id"]) for r in receiver.records()]
    assert len(order) == TOTAL_RECORDS
    assert order.index(("repositories", "12345678")) < order.index(
        ("pull_requests", "32348491")
    )
    assert len(receiver.batches()) == 6


def test_400_rejects_and_keeps_batch(agent: AgentSetup, receiver: Receiver) -> None:
    _fetch(agent)
    receiver.enqueue(400, body={"error": "schema mismatch"})

    first = agent.run("push")
    second = agent.run("push")
    status = _status(agent)
    third = agent.run("push", "--retry-rejected")

    attempts = receiver.attempts()
    assert first.returncode == 1
    assert second.returncode == 0
    assert [a.status for a in attempts] == [400, 200]
    assert status["backlog"]["rejected_batches"] == 1
    assert status["backlog"]["rejected_records"] == TOTAL_RECORDS
    assert third.returncode == 0
    assert attempts[0].webhook_id == receiver.attempts()[-1].webhook_id
    assert len(receiver.records()) == TOTAL_RECORDS
    assert _status(agent)["backlog"]["rejected_batches"] == 0


def test_401_stops_push_and_keeps_everything(
    agent: AgentSetup, receiver: Receiver
) -> None:
    agent.config["push"]["max_batch_records"] = 50
    _fetch(agent)
    receiver.enqueue(401)

    stopped = agent.run("push")
    backlog = _status(agent)["backlog"]
    resumed = agent.run("push")

    assert stopped.returncode == 1
    assert len(receiver.attempts()) == 5
    assert backlog["pending_batches"] == 4
    assert resumed.returncode == 0
    assert len(receiver.records()) == TOTAL_RECORDS


def test_mhq_down_keeps_backlog_in_order(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["push"]["max_batch_records"] = 50
    agent.config["push"]["retry_budget_s"] = 2
    _fetch(agent)
    receiver.refuse_connections()

    down = [agent.run("push") for _ in range(2)]
    receiver.accept_connections()
    up = agent.run("push")

    assert [c.returncode for c in down] == [1, 1]
    assert up.returncode == 0, up.stderr[-2000:]
    assert len(receiver.records()) == TOTAL_RECORDS
    per_id = Counter(a.webhook_id for a in receiver.attempts())
    assert all(count == 1 for count in per_id.values())


def test_409_counts_as_delivered(agent: AgentSetup, receiver: Receiver) -> None:
    _fetch(agent)
    receiver.enqueue(409)

    completed = agent.run("push")

    assert completed.returncode == 0
    assert _status(agent)["backlog"]["pending_batches"] == 0
