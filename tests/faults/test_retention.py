"""Retention: delivered batches and old job runs are pruned at the end of each push;
rejected batches, split batches with a kept half, the latest run of each job and
every record stay."""

from __future__ import annotations

import json

from tests.fakes.receiver import Receiver
from tests.faults.support import query
from tests.integration.agent import AgentSetup


def _batches(db_url: str) -> dict[str, int]:
    rows = query(db_url, "SELECT status, count(*) FROM outbox_batches GROUP BY status")
    return {status: count for status, count in rows}


def _age(db_url: str, days: int) -> None:
    """Make every delivered batch and finished job run ``days`` old."""
    query(
        db_url,
        "UPDATE outbox_batches SET delivered_at = now() - make_interval(days => %s) "
        "WHERE status = 'delivered'",
        (days,),
    )
    query(
        db_url,
        "UPDATE job_runs SET started_at = now() - make_interval(days => %s), "
        "finished_at = now() - make_interval(days => %s)",
        (days, days),
    )


def test_prunes_delivered_keeps_rejected(
    agent: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    agent.config["push"]["max_batch_records"] = 50
    assert agent.run("fetch").returncode == 0
    receiver.enqueue(413)
    receiver.enqueue(422)
    assert agent.run("push").returncode == 1
    assert agent.run("heartbeat").returncode == 0
    before = _batches(db_url)
    records = query(db_url, "SELECT count(*) FROM records")[0][0]
    _age(db_url, 31)
    sent = len(receiver.batches())

    assert agent.run("push").returncode == 0

    after = _batches(db_url)
    runs = query(db_url, "SELECT job, count(*) FROM job_runs GROUP BY job")
    summary = query(
        db_url, "SELECT summary FROM job_runs WHERE job = 'push' ORDER BY id DESC"
    )[0][0]
    assert before == {"split": 1, "rejected": 1, "delivered": 4}
    # The split batch stays while its rejected half is kept.
    assert after == {"split": 1, "rejected": 1}
    assert summary["pruned_batches"] == 4
    # The old push run is gone; the old fetch and heartbeat runs are the latest of
    # their jobs, so they stay.
    assert dict(runs) == {"push": 1, "heartbeat": 1, "fetch": 1}
    assert query(db_url, "SELECT count(*) FROM records")[0][0] == records
    assert len(receiver.batches()) == sent
    status = json.loads(agent.run("status", "--json").stdout)
    assert status["backlog"]["rejected_batches"] == 1
    assert status["backlog"]["unqueued_records"] == 0

    assert agent.run("push", "--retry-rejected").returncode == 0
    _age(db_url, 8)
    assert agent.run("push").returncode == 0

    assert _batches(db_url) == {}
    assert len(receiver.records()) == records
    assert json.loads(agent.run("status", "--json").stdout)["backlog"] == {
        "unqueued_records": 0,
        "pending_batches": 0,
        "pending_records": 0,
        "rejected_batches": 0,
        "rejected_records": 0,
    }


def test_recent_batches_kept_by_default(
    agent: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    assert agent.run("sync").returncode == 0
    _age(db_url, 6)

    assert agent.run("push").returncode == 0

    assert _batches(db_url) == {"delivered": 1}
    assert query(db_url, "SELECT count(*) FROM job_runs")[0][0] == 3


def test_retention_days_from_environment(
    agent: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    agent.env["RETENTION_DELIVERED_DAYS"] = "0"
    agent.env["RETENTION_JOB_RUNS_DAYS"] = "0"

    assert agent.run("sync").returncode == 0
    assert agent.run("sync").returncode == 0

    runs = query(db_url, "SELECT job, status FROM job_runs ORDER BY id")
    assert _batches(db_url) == {}
    assert len(receiver.records()) == 161
    # Each job keeps its latest run, and the running push is never pruned.
    assert runs == [("fetch", "ok"), ("push", "ok")]
