"""SIGKILL at many points of fetch, store and push, then ``sync`` until it succeeds.

After recovery the receiver contains exactly what an undisturbed run delivers, each
version of each record under one webhook-id (a repeat of the same id is fine), the
bookmarks equal the undisturbed run's, and no job run is left marked running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import COUNTS, CleanRun
from tests.faults.support import (
    AgentProcess,
    SecretSearch,
    bookmarks,
    event,
    host_of,
    locked,
    query,
    running_job_runs,
    sent_twice,
    sync_until_ok,
    versions,
    wait_until_agent_blocked,
)
from tests.integration.agent import AgentSetup

SNOWFLAKE_MERGE_REQUESTS = r"/projects/12345678/merge_requests$"


@dataclass
class Scene:
    """What a kill point needs: the agent, the fakes and the database."""

    agent: AgentSetup
    gitlab: FakeGitLab
    receiver: Receiver
    db_url: str
    search: SecretSearch

    def start(self, *args: str) -> AgentProcess:
        return AgentProcess(self.agent, *args, on_output=self.search.observe)


KillPoint = Callable[[Scene], str]


def at_event(name: str, nth: int = 1, **fields: object) -> KillPoint:
    """Kill when the nth log line ``name`` with ``fields`` appears."""

    def kill(scene: Scene) -> str:
        agent = scene.start("sync")
        agent.wait_for(event(name, **fields), nth)
        assert agent.kill() == -9
        return f"after log line {nth} '{name}'"

    return kill


def during_push_retry(scene: Scene) -> str:
    scene.receiver.enqueue(503, headers={"Retry-After": "3"})
    agent = scene.start("sync")
    agent.wait_for(event("push retry"))
    assert agent.kill() == -9
    return "while waiting to retry a batch after 503"


def after_split(scene: Scene) -> str:
    scene.receiver.enqueue(413)
    agent = scene.start("sync")
    agent.wait_for(event("batch too large (413), split in two"))
    assert agent.kill() == -9
    return "after a batch was split on 413"


def mid_request(scene: Scene) -> str:
    scene.gitlab.add_fault(SNOWFLAKE_MERGE_REQUESTS, delay_s=30)
    agent = scene.start("sync")
    agent.wait_for(event("fetch progress", stream="repository"))
    time.sleep(0.5)
    assert scene.gitlab.request_count(SNOWFLAKE_MERGE_REQUESTS) == 0
    assert agent.kill() == -9
    return "while a merge request list request was unanswered"


def blocked_from_start(statement: str, expected_sql: str) -> KillPoint:
    """Kill inside the open transaction that a lock held from the start blocks."""

    def kill(scene: Scene) -> str:
        assert scene.agent.run("migrate").returncode == 0
        with locked(scene.db_url, statement):
            agent = scene.start("sync")
            waiting = wait_until_agent_blocked(scene.db_url)
            assert expected_sql in waiting
            assert agent.kill() == -9
        return f"inside a transaction, at {expected_sql}"

    return kill


def blocked_at_finish(scene: Scene) -> str:
    agent = scene.start("sync")
    agent.wait_for(event("job started", job="fetch"))
    with locked(scene.db_url, "LOCK TABLE job_runs IN SHARE MODE"):
        waiting = wait_until_agent_blocked(scene.db_url)
        assert "UPDATE job_runs" in waiting
        assert agent.kill() == -9
    return "inside the transaction that finishes the fetch run"


def accepted_but_not_recorded(scene: Scene) -> str:
    """Kill after MHQ accepted a batch and before the agent recorded the response."""
    scene.agent.config["push"]["retry_budget_s"] = 1
    scene.receiver.refuse_connections()
    assert scene.agent.run("sync").returncode == 1
    scene.receiver.accept_connections()
    with locked(scene.db_url, "SELECT id FROM outbox_batches FOR SHARE"):
        agent = scene.start("push")
        waiting = wait_until_agent_blocked(scene.db_url)
        assert "UPDATE outbox_batches" in waiting
        assert len(scene.receiver.batches()) == 1
        assert agent.kill() == -9
    scene.agent.config["push"]["retry_budget_s"] = 5
    return "after MHQ accepted a batch, before the agent recorded it"


KILL_POINTS = [
    # fetch
    pytest.param(at_event("job started", job="fetch"), id="fetch-started"),
    pytest.param(at_event("http request", 1, provider="gitlab"), id="request-1"),
    pytest.param(at_event("http request", 3, provider="gitlab"), id="request-3"),
    pytest.param(at_event("http request", 10, provider="gitlab"), id="request-10"),
    pytest.param(at_event("http request", 25, provider="gitlab"), id="request-25"),
    pytest.param(at_event("http request", 45, provider="gitlab"), id="request-45"),
    pytest.param(at_event("http request", 70, provider="gitlab"), id="request-70"),
    pytest.param(at_event("http request", 95, provider="gitlab"), id="request-95"),
    pytest.param(mid_request, id="mid-request"),
    pytest.param(at_event("fetch progress", stream="repository"), id="repository-page"),
    pytest.param(
        at_event("fetch progress", stream="merge_requests"), id="merge-request-page"
    ),
    pytest.param(at_event("fetch progress", stream="pipelines"), id="pipeline-page"),
    pytest.param(
        at_event("fetch progress", stream="deployments"), id="deployment-page"
    ),
    pytest.param(at_event("repository fetch started", 2), id="second-repository"),
    pytest.param(at_event("repository fetch started", 3), id="third-repository"),
    pytest.param(at_event("job finished", job="fetch"), id="fetch-finished"),
    # store: killed inside an open transaction
    pytest.param(
        blocked_from_start(
            "LOCK TABLE bookmarks IN SHARE MODE", "INSERT INTO bookmarks"
        ),
        id="in-page-transaction",
    ),
    pytest.param(
        blocked_from_start(
            "LOCK TABLE repository_state IN SHARE MODE", "INSERT INTO repository_state"
        ),
        id="in-outcome-transaction",
    ),
    pytest.param(
        blocked_from_start(
            "LOCK TABLE outbox_batches IN SHARE MODE", "INSERT INTO outbox_batches"
        ),
        id="in-batch-transaction",
    ),
    pytest.param(blocked_at_finish, id="in-run-transaction"),
    pytest.param(accepted_but_not_recorded, id="accepted-not-recorded"),
    # push
    pytest.param(at_event("job started", job="push"), id="push-started"),
    pytest.param(at_event("http request", 1, provider="mhq"), id="first-post"),
    pytest.param(at_event("batch delivered", 1), id="batch-1-delivered"),
    pytest.param(at_event("batch delivered", 4), id="batch-4-delivered"),
    pytest.param(at_event("batch delivered", 8), id="batch-8-delivered"),
    pytest.param(during_push_retry, id="push-retry-wait"),
    pytest.param(after_split, id="after-413-split"),
]


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_kill_then_recover(
    kill_point: KillPoint,
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    db_url: str,
    clean_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    agent.config["push"]["max_batch_records"] = 20
    fake_gitlab.latency_s = 0.01
    scene = Scene(agent, fake_gitlab, receiver, db_url, secret_search)

    where = kill_point(scene)
    COUNTS.kill_points.append(where)
    fake_gitlab.latency_s = 0.0
    fake_gitlab.clear_faults()
    sync_until_ok(agent)

    host = host_of(fake_gitlab)
    received = versions(receiver, host)
    lost = clean_run.versions - set(received)
    extra = set(received) - clean_run.versions
    twice = sent_twice(receiver)
    COUNTS.records_lost += len(lost)
    COUNTS.sent_under_two_ids += len(twice)
    assert lost == set()
    assert extra == set()
    assert twice == []
    assert bookmarks(db_url, host) == clean_run.bookmarks
    assert running_job_runs(db_url) == []
    backlog = json.loads(agent.run("status", "--json").stdout)["backlog"]
    assert backlog["unqueued_records"] == 0
    assert backlog["pending_batches"] == 0
    assert backlog["rejected_batches"] == 0
    assert query(db_url, "SELECT count(*) FROM records")[0][0] > 0
