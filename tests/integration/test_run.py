"""``mhq-agent run``: start-up jobs, the instance lock and a clean, quick shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup

NEVER = "0 0 1 1 *"


class RunningAgent:
    """An ``mhq-agent run`` process whose JSON log lines are collected as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"event not logged; last events: {self.events[-5:]}")

    def terminate(self) -> float:
        """Send SIGTERM and return the seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)
        self._reader.join(5)
        return time.monotonic() - started


@contextmanager
def running(agent: AgentSetup) -> Iterator[RunningAgent]:
    process = agent.start("run")
    try:
        yield RunningAgent(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _never_on_schedule(agent: AgentSetup) -> None:
    agent.config["schedule"] = {"fetch": NEVER, "push": NEVER, "heartbeat": NEVER}


def _event(name: str, **fields: object) -> Callable[[dict], bool]:
    return lambda e: (
        e["event"] == name and all(e.get(k) == v for k, v in fields.items())
    )


def test_run_starts_with_heartbeat_and_overdue_fetch(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    _never_on_schedule(agent)

    with running(agent) as process:
        process.wait_for(_event("heartbeat sent"))
        process.wait_for(_event("job finished", job="fetch", status="ok"))
        elapsed = process.terminate()

    assert process.process.returncode == 0
    assert elapsed < 10
    assert len(receiver.heartbeats()) == 1
    assert receiver.batches() == []
    assert fake_gitlab.request_count(r"/projects/12345678/merge_requests$") == 1


def test_fetch_not_overdue_waits(agent: AgentSetup, fake_gitlab: FakeGitLab) -> None:
    assert agent.run("fetch").returncode == 0
    fake_gitlab.reset_log()
    _never_on_schedule(agent)

    with running(agent) as process:
        process.wait_for(_event("heartbeat sent"))
        time.sleep(1)
        process.terminate()

    assert fake_gitlab.request_count() == 0


def test_second_agent_stays_idle(agent: AgentSetup, receiver: Receiver) -> None:
    _never_on_schedule(agent)

    with running(agent) as first:
        first.wait_for(_event("heartbeat sent"))
        with running(agent) as second:
            second.wait_for(
                _event("another agent has the lock on this database; staying idle")
            )
            time.sleep(1)
            second_exit = second.terminate()
        first_exit = first.terminate()

    assert len(receiver.heartbeats()) == 1
    assert second.process.returncode == 0
    assert second_exit < 10
    assert first_exit < 10


def test_sigterm_commits_page_and_resumes(
    agent: AgentSetup, fake_gitlab: FakeGitLab, db_url: str
) -> None:
    _never_on_schedule(agent)
    fake_gitlab.latency_s = 0.1

    with running(agent) as process:
        process.wait_for(_event("fetch progress", stream="repository"))
        elapsed = process.terminate()

    assert process.process.returncode == 0
    assert elapsed < 10
    assert any(e["event"] == "job interrupted" for e in process.events)
    bookmark = _bookmark(db_url, "merge_requests")
    assert bookmark is not None

    fake_gitlab.latency_s = 0.0
    fake_gitlab.reset_log()
    assert agent.run("fetch").returncode == 0
    first_list = fake_gitlab.requests(r"/projects/12345678/merge_requests$")[0]
    assert first_list.query["updated_after"] == bookmark
    assert (
        fake_gitlab.request_count(r"/projects/12345678/merge_requests/\d+/commits") == 0
    )


def _bookmark(db_url: str, stream: str) -> str | None:
    with psycopg2.connect(db_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT value FROM bookmarks WHERE stream = %s AND repository_key LIKE %s",
            (stream, "%snowflake_spend"),
        )
        row = cursor.fetchone()
    conn.close()
    return row[0] if row else None


def test_missing_secret_reported_and_agent_keeps_running(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    _never_on_schedule(agent)
    del agent.config["integrations"]["gitlab"]["access_token"]

    with running(agent) as process:
        skipped = process.wait_for(
            _event("job skipped: configuration incomplete", job="fetch")
        )
        status = agent.run("status", "--json")
        still_running = process.process.poll() is None
        process.terminate()

    assert "integrations.gitlab.access_token" in skipped["error"]
    assert still_running
    report = json.loads(status.stdout)
    assert any("GITLAB_ACCESS_TOKEN" in problem for problem in report["problems"])
    assert "GITLAB_ACCESS_TOKEN" in json.dumps(
        receiver.heartbeats()[0].data["problems"]
    )
    assert fake_gitlab.request_count() == 0
