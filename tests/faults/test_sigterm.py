"""SIGTERM during a long fetch: the agent exits within 10 seconds, and the next run
continues after the last committed page without fetching that page again."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.support import (
    AgentProcess,
    SecretSearch,
    event,
    query,
    sent_twice,
)
from tests.integration.agent import AgentSetup

ADDED = 130
MERGE_REQUESTS = r"/projects/12345678/merge_requests$"
NEVER = "0 0 1 1 *"


def _add_merge_requests(gitlab: FakeGitLab) -> list[dict]:
    """Add merge requests newer than the fixtures', so they fill pages 1 and 2."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    added = []
    for number in range(ADDED):
        moment = (start + timedelta(minutes=number)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        added.append(
            gitlab.add_merge_request(
                {
                    "title": f"Batch job {number}",
                    "created_at": moment,
                    "updated_at": moment,
                }
            )
        )
    return added


def _stored_merge_requests(db_url: str) -> dict[str, str]:
    rows = query(
        db_url,
        "SELECT record_key, payload->>'number' FROM records "
        "WHERE entity = 'pull_requests'",
    )
    return {key: number for key, number in rows}


@pytest.mark.parametrize("command", ["fetch", "run"])
def test_sigterm_resumes_after_committed_page(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    db_url: str,
    secret_search: SecretSearch,
    command: str,
) -> None:
    added = _add_merge_requests(fake_gitlab)
    last = added[-1]["iid"]
    agent.config["schedule"] = {"fetch": NEVER, "push": NEVER, "heartbeat": NEVER}
    # Page 2 waits on this merge request's commits, so it cannot commit in time.
    fake_gitlab.add_fault(rf"/merge_requests/{last}/commits$", delay_s=30, times=None)
    fake_gitlab.latency_s = 0.005
    running = AgentProcess(agent, command, on_output=secret_search.observe)
    running.wait_for(event("fetch progress", stream="merge_requests"), timeout=60)

    started = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    status = running.finish(timeout=30)
    elapsed = time.monotonic() - started
    stored = _stored_merge_requests(db_url)
    bookmark = query(
        db_url,
        "SELECT value FROM bookmarks WHERE stream = 'merge_requests' "
        "AND repository_key LIKE %s",
        ("%snowflake_spend",),
    )[0][0]
    fake_gitlab.clear_faults()
    fake_gitlab.latency_s = 0.0
    fake_gitlab.reset_log()
    resumed = agent.run("sync")

    first_list = fake_gitlab.requests(MERGE_REQUESTS)[0]
    detail_iids = {
        int(r.path.split("/")[-2]) for r in fake_gitlab.requests(r"/commits$")
    }
    stored_iids = {int(number) for number in stored.values()}
    assert elapsed < 10
    assert status == (0 if command == "run" else 1)
    assert "shutdown requested" in running.stderr
    # Page 1 (100 merge requests) was committed, page 2 was not.
    assert len(stored) == 100
    assert last not in stored_iids
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first_list.query["updated_after"] == bookmark
    assert detail_iids
    assert detail_iids.isdisjoint(stored_iids)
    assert len(receiver.records("pull_requests")) == 24 + ADDED
    assert sent_twice(receiver) == []
