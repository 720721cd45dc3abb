"""SIGKILL during a Bitbucket sync, alone or beside GitLab, then ``sync`` until it
succeeds.

The kill points cover the activity log, the pull request list and the per-pull
request commit requests, pipelines, deployments and the push of Bitbucket batches.
After recovery the receiver contains exactly what an undisturbed run delivers, each
version of each record under one webhook-id, and the bookmarks equal the
undisturbed run's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import BITBUCKET_KILL, COUNTS, CleanRun
from tests.faults.support import (
    AgentProcess,
    Event,
    SecretSearch,
    bookmarks,
    event,
    host_of,
    query,
    running_job_runs,
    sent_twice,
    sync_until_ok,
    versions,
)
from tests.integration.agent import AgentSetup

ACTIVITY = r"/pullrequests/activity$"
PULL_REQUESTS = r"/pullrequests$"
COMMITS = r"/pullrequests/\d+/commits$"


@dataclass
class Scene:
    """What a kill point needs: the agent, the fakes and the database."""

    agent: AgentSetup
    bitbucket: FakeBitbucket
    receiver: Receiver
    search: SecretSearch

    def start(self, *args: str) -> AgentProcess:
        return AgentProcess(self.agent, *args, on_output=self.search.observe)


KillPoint = Callable[[Scene], str]


def request_to(path_regex: str) -> Callable[[Event], bool]:
    """Match the log line of a finished Bitbucket request whose URL matches."""
    pattern = re.compile(path_regex.removesuffix("$") + r"(\?|$)")
    return lambda e: (
        e.get("event") == "http request"
        and e.get("provider") == "bitbucket"
        and pattern.search(str(e.get("url"))) is not None
    )


def at(matches: Callable[[Event], bool], nth: int, where: str) -> KillPoint:
    """Kill when the nth log line that ``matches`` appears."""

    def kill(scene: Scene) -> str:
        agent = scene.start("sync")
        agent.wait_for(matches, nth)
        assert agent.kill() == -9
        return where

    return kill


def at_event(name: str, nth: int = 1, **fields: object) -> KillPoint:
    return at(event(name, **fields), nth, f"after log line {nth} '{name}' {fields}")


def at_request(path_regex: str, nth: int) -> KillPoint:
    return at(request_to(path_regex), nth, f"after request {nth} to {path_regex}")


def while_unanswered(path_regex: str, after: str) -> KillPoint:
    """Kill while every request to ``path_regex`` waits for its response.

    ``after`` is the path of the request that comes right before them.
    """

    def kill(scene: Scene) -> str:
        scene.bitbucket.add_fault(path_regex, delay_s=30, times=None)
        agent = scene.start("sync")
        agent.wait_for(request_to(after))
        time.sleep(0.5)
        # The fake logs a request when it sends the response, so none was sent.
        assert scene.bitbucket.request_count(path_regex) == 0
        assert agent.kill() == -9
        return f"while requests to {path_regex} were unanswered"

    return kill


def at_bitbucket_batch(nth: int) -> KillPoint:
    """Kill after the nth Bitbucket batch was delivered, whichever provider's
    batches go first."""

    def kill(scene: Scene) -> str:
        def delivered_bitbucket(e: Event) -> bool:
            if e.get("event") != "batch delivered":
                return False
            providers = {
                b.message_id: b.data["provider"] for b in scene.receiver.batches()
            }
            return providers.get(str(e.get("batch_id"))) == "bitbucket"

        agent = scene.start("sync")
        agent.wait_for(delivered_bitbucket, nth)
        assert agent.kill() == -9
        return f"after Bitbucket batch {nth} was delivered"

    return kill


BITBUCKET_ONLY = False
WITH_GITLAB = True

KILL_POINTS = [
    # fetch, Bitbucket alone
    pytest.param(
        at_event("http request", 1, provider="bitbucket"),
        BITBUCKET_ONLY,
        id="first-request",
    ),
    pytest.param(
        at_event("fetch progress", 2, stream="activity"),
        BITBUCKET_ONLY,
        id="activity-page-2",
    ),
    pytest.param(
        while_unanswered(ACTIVITY, after=r"/repositories/[^/]+/[^/]+$"),
        BITBUCKET_ONLY,
        id="activity-unanswered",
    ),
    pytest.param(
        at_event("fetch progress", 1, stream="pull_requests"),
        BITBUCKET_ONLY,
        id="pull-request-page-1",
    ),
    pytest.param(at_request(COMMITS, 20), BITBUCKET_ONLY, id="commits-request-20"),
    pytest.param(
        while_unanswered(COMMITS, after=PULL_REQUESTS),
        BITBUCKET_ONLY,
        id="commits-unanswered",
    ),
    pytest.param(
        at_event("fetch progress", 1, stream="pipelines"),
        BITBUCKET_ONLY,
        id="pipeline-page",
    ),
    pytest.param(
        at_event("fetch progress", 1, stream="deployments"),
        BITBUCKET_ONLY,
        id="deployment-page",
    ),
    # push, Bitbucket alone
    pytest.param(at_event("batch delivered", 7), BITBUCKET_ONLY, id="batch-7"),
    # GitLab and Bitbucket together
    pytest.param(
        at_event("fetch progress", 1, provider="bitbucket", stream="activity"),
        WITH_GITLAB,
        id="mixed-activity-page",
    ),
    pytest.param(
        at_event("fetch progress", 2, provider="bitbucket", stream="pull_requests"),
        WITH_GITLAB,
        id="mixed-pull-request-page-2",
    ),
    pytest.param(
        while_unanswered(COMMITS, after=PULL_REQUESTS),
        WITH_GITLAB,
        id="mixed-commits-unanswered",
    ),
    pytest.param(at_bitbucket_batch(1), WITH_GITLAB, id="mixed-bitbucket-batch-1"),
]


@pytest.mark.parametrize(("kill_point", "with_gitlab"), KILL_POINTS)
def test_kill_bitbucket_sync_then_recover(
    kill_point: KillPoint,
    with_gitlab: bool,
    request: pytest.FixtureRequest,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    db_url: str,
    secret_search: SecretSearch,
) -> None:
    agent: AgentSetup = request.getfixturevalue(
        "mixed_agent" if with_gitlab else "bitbucket_agent"
    )
    clean: CleanRun = request.getfixturevalue(
        "clean_mixed_run" if with_gitlab else "clean_bitbucket_run"
    )
    agent.config["push"]["max_batch_records"] = 20
    fake_bitbucket.latency_s = 0.01
    scene = Scene(agent, fake_bitbucket, receiver, secret_search)

    where = kill_point(scene)
    COUNTS.kill_points.append(BITBUCKET_KILL + where)
    fake_bitbucket.latency_s = 0.0
    fake_bitbucket.clear_faults()
    sync_until_ok(agent)

    hosts = (host_of(fake_gitlab), host_of(fake_bitbucket))
    received = versions(receiver, *hosts)
    lost = clean.versions - set(received)
    extra = set(received) - clean.versions
    twice = sent_twice(receiver)
    COUNTS.records_lost += len(lost)
    COUNTS.sent_under_two_ids += len(twice)
    assert lost == set()
    assert extra == set()
    assert twice == []
    assert bookmarks(db_url, *hosts) == clean.bookmarks
    assert running_job_runs(db_url) == []
    backlog = json.loads(agent.run("status", "--json").stdout)["backlog"]
    assert backlog["unqueued_records"] == 0
    assert backlog["pending_batches"] == 0
    assert backlog["rejected_batches"] == 0
    stored = query(db_url, "SELECT count(*) FROM records WHERE provider = 'bitbucket'")
    assert stored[0][0] > 0
