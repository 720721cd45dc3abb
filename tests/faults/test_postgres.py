"""Postgres restarted under a running agent: it reconnects with backoff, repeats the
interrupted transaction, and loses nothing.

These tests start a PostgreSQL server of their own, so restarting it disturbs no
other test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.postgres import ThrowawayPostgres, fresh_database
from tests.fakes.receiver import Receiver
from tests.faults.conftest import CleanRun
from tests.faults.support import (
    FAULT_TOKEN,
    AgentProcess,
    SecretSearch,
    bookmarks,
    event,
    host_of,
    sent_twice,
    versions,
)
from tests.integration.agent import AgentSetup, make_setup


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def own_agent(
    own_postgres: ThrowawayPostgres,
    tmp_path: Path,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    own_postgres.start()
    url = fresh_database(own_postgres.url)
    setup = make_setup(tmp_path, url, fake_gitlab, receiver, receiver_keys)
    setup.config["integrations"]["gitlab"]["access_token"] = FAULT_TOKEN
    return setup


def _assert_complete(
    agent: AgentSetup, receiver: Receiver, gitlab: FakeGitLab, clean_run: CleanRun
) -> None:
    host = host_of(gitlab)
    assert set(versions(receiver, host)) == clean_run.versions
    assert sent_twice(receiver) == []
    assert bookmarks(agent.config["database_url"], host) == clean_run.bookmarks
    backlog = json.loads(agent.run("status", "--json").stdout)["backlog"]
    assert backlog["unqueued_records"] == 0
    assert backlog["pending_batches"] == 0


def test_restart_during_fetch(
    own_agent: AgentSetup,
    own_postgres: ThrowawayPostgres,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    fake_gitlab.latency_s = 0.02
    agent = AgentProcess(own_agent, "sync", on_output=secret_search.observe)
    agent.wait_for(event("fetch progress", stream="merge_requests"))

    own_postgres.restart("fast")
    status = agent.finish()

    names = [e["event"] for e in agent.events]
    assert status == 0, agent.stderr[-3000:]
    assert "database connection lost, repeating the transaction" in names
    assert "job finished" in names
    _assert_complete(own_agent, receiver, fake_gitlab, clean_run)


def test_restart_during_push(
    own_agent: AgentSetup,
    own_postgres: ThrowawayPostgres,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    receiver.enqueue(503, headers={"Retry-After": "2"})
    agent = AgentProcess(own_agent, "sync", on_output=secret_search.observe)
    agent.wait_for(event("push retry"))

    own_postgres.restart("immediate")
    status = agent.finish()

    names = [e["event"] for e in agent.events]
    assert status == 0, agent.stderr[-3000:]
    assert "database connection lost, repeating the transaction" in names
    assert [a.status for a in receiver.attempts()] == [503, 200]
    _assert_complete(own_agent, receiver, fake_gitlab, clean_run)


def test_down_at_start_waits_with_backoff(
    own_agent: AgentSetup,
    own_postgres: ThrowawayPostgres,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    own_postgres.stop()
    agent = AgentProcess(own_agent, "sync", on_output=secret_search.observe)
    agent.wait_for(event("database connect failed, retrying"), nth=2)
    time.sleep(0.5)

    own_postgres.start()
    status = agent.finish()

    retries = [e for e in agent.events if e["event"].startswith("database connect")]
    assert status == 0, agent.stderr[-3000:]
    assert len(retries) >= 2
    assert retries[1]["retry_in_s"] > 0
    _assert_complete(own_agent, receiver, fake_gitlab, clean_run)
