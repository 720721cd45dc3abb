"""Bitbucket failing in every way while GitLab works: the run ends within its retry
budget, the Bitbucket repository fails alone, GitLab still syncs, and the next run
recovers everything."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.fakes.bitbucket import DEFAULT_SCOPES, FakeBitbucket
from tests.fakes.bitbucket_data import REPOSITORY
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import COUNTS, CleanRun
from tests.faults.support import (
    AgentProcess,
    SecretSearch,
    bookmarks,
    event,
    host_of,
    sent_twice,
    versions,
)
from tests.integration.agent import AgentSetup, log_events

BUDGET_S = 2
# Streams that send requests. The repository stream reuses the lookup.
REQUESTING_STREAMS = 4


def _states(agent: AgentSetup) -> dict[str, dict[str, Any]]:
    report = json.loads(agent.run("status", "--json").stdout)
    return {repo["repository"]: repo for repo in report["repositories"]}


def _split(states: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Return the Bitbucket repository's state and the GitLab repositories' statuses."""
    bitbucket = [s for key, s in states.items() if key.endswith(REPOSITORY)]
    gitlab = [s["status"] for key, s in states.items() if not key.endswith(REPOSITORY)]
    assert len(bitbucket) == 1
    return bitbucket[0], gitlab


def _received(
    receiver: Receiver, gitlab: FakeGitLab, bitbucket: FakeBitbucket
) -> set[tuple[str, str, str]]:
    return set(versions(receiver, host_of(gitlab), host_of(bitbucket)))


def _of_gitlab(clean: CleanRun) -> set[tuple[str, str, str]]:
    return {v for v in clean.versions if json.loads(v[2])["provider"] == "gitlab"}


def _assert_recovered(
    agent: AgentSetup,
    receiver: Receiver,
    gitlab: FakeGitLab,
    bitbucket: FakeBitbucket,
    clean: CleanRun,
) -> None:
    """Check that the receiver contains exactly a clean run's versions, each under
    one id, and that the bookmarks equal the clean run's."""
    received = _received(receiver, gitlab, bitbucket)
    lost = clean.versions - received
    twice = sent_twice(receiver)
    COUNTS.records_lost += len(lost)
    COUNTS.sent_under_two_ids += len(twice)
    assert lost == set()
    assert received - clean.versions == set()
    assert twice == []
    hosts = (host_of(gitlab), host_of(bitbucket))
    assert bookmarks(agent.config["database_url"], *hosts) == clean.bookmarks


@pytest.mark.parametrize(
    ("path", "fault"),
    [
        pytest.param(r"/pullrequests/activity$", {"status": 500}, id="500-activity"),
        pytest.param(r"/pipelines/$", {"status": 503}, id="503-pipelines"),
        pytest.param(r"/deployments/$", {"mode": "reset"}, id="reset-deployments"),
        pytest.param(r"/pullrequests$", {"mode": "truncate"}, id="cut-short-list"),
        pytest.param(r"/pullrequests/activity$", {"mode": "html"}, id="html-activity"),
        pytest.param(r"/commits$", {"delay_s": 2.5}, id="slow-commits"),
    ],
)
def test_failing_stream_fails_alone(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
    path: str,
    fault: dict[str, Any],
) -> None:
    mixed_agent.config["http"] = {"retry_budget_s": BUDGET_S, "timeout_s": 1}
    fake_bitbucket.add_fault(path, times=None, **fault)

    started = time.monotonic()
    failed = mixed_agent.run("sync")
    elapsed = time.monotonic() - started
    bitbucket, gitlab = _split(_states(mixed_agent))
    received = _received(receiver, fake_gitlab, fake_bitbucket)
    fake_bitbucket.clear_faults()
    recovered = mixed_agent.run("sync")

    retries = [e for e in log_events(failed) if e["event"] == "http retry"]
    assert failed.returncode == 1
    assert retries
    assert all(e["provider"] == "bitbucket" for e in retries)
    # One stream fails, after at most one retry budget per concurrent request.
    assert elapsed < 2 * (BUDGET_S + 1) + 10
    assert bitbucket["status"] == "partial"
    assert bitbucket["error"]["code"] == "unavailable"
    assert gitlab == ["ok", "ok", "ok"]
    assert _of_gitlab(clean_mixed_run) <= received
    # What did arrive is what a clean run sends, nothing half-built.
    assert received <= clean_mixed_run.versions
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_recovered(
        mixed_agent, receiver, fake_gitlab, fake_bitbucket, clean_mixed_run
    )


def test_429_storm_without_headers_fails_alone(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
) -> None:
    """Bitbucket's hourly request limit returns 429 with no Retry-After."""
    mixed_agent.config["http"] = {"retry_budget_s": BUDGET_S, "timeout_s": 1}
    # The lookup and the two activity pages fit in the hour, nothing after them.
    fake_bitbucket.rate_limit_per_hour = 3

    started = time.monotonic()
    failed = mixed_agent.run("sync")
    elapsed = time.monotonic() - started
    bitbucket, gitlab = _split(_states(mixed_agent))
    received = _received(receiver, fake_gitlab, fake_bitbucket)
    over_limit = fake_bitbucket.requests()[3:]
    fake_bitbucket.rate_limit_per_hour = None
    fake_bitbucket.reset_rate_limit()
    recovered = mixed_agent.run("sync")

    assert failed.returncode == 1
    assert over_limit
    assert {r.status for r in over_limit} == {429}
    assert elapsed < REQUESTING_STREAMS * (BUDGET_S + 1) + 10
    assert bitbucket["status"] == "partial"
    assert bitbucket["error"]["code"] == "unavailable"
    assert gitlab == ["ok", "ok", "ok"]
    assert _of_gitlab(clean_mixed_run) <= received
    assert received <= clean_mixed_run.versions
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_recovered(
        mixed_agent, receiver, fake_gitlab, fake_bitbucket, clean_mixed_run
    )


def test_token_revoked_midway(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    new_token = "bbtok-" + secrets.token_hex(16)
    secret_search.add_secret(new_token)
    fake_bitbucket.latency_s = 0.01
    running = AgentProcess(mixed_agent, "sync", on_output=secret_search.observe)
    running.wait_for(event("http request", provider="bitbucket"), nth=10)

    fake_bitbucket.set_token(new_token)
    started = time.monotonic()
    status = running.finish()
    elapsed = time.monotonic() - started
    bitbucket, gitlab = _split(_states(mixed_agent))
    heartbeat = mixed_agent.run("heartbeat")
    mixed_agent.config["integrations"]["bitbucket"]["access_token"] = new_token
    fake_bitbucket.latency_s = 0.0
    recovered = mixed_agent.run("sync")

    reported = receiver.heartbeats()[-1].data["repositories"]
    rejected = [r for r in fake_bitbucket.requests() if r.status == 401]
    assert status == 1
    assert elapsed < 10
    assert rejected
    assert bitbucket["error"]["code"] == "unauthorized"
    assert gitlab == ["ok", "ok", "ok"]
    assert heartbeat.returncode == 0
    assert [
        r["error"]["code"] for key, r in reported.items() if key.endswith(REPOSITORY)
    ] == ["unauthorized"]
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_recovered(
        mixed_agent, receiver, fake_gitlab, fake_bitbucket, clean_mixed_run
    )


def test_missing_scope_fails_alone(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
) -> None:
    fake_bitbucket.set_scopes(["repository", "pullrequest"])

    failed = mixed_agent.run("sync")
    bitbucket, gitlab = _split(_states(mixed_agent))
    received = _received(receiver, fake_gitlab, fake_bitbucket)
    pull_requests = receiver.records("pull_requests", "bitbucket")
    deployments = receiver.records("deployments", "bitbucket")
    fake_bitbucket.set_scopes(DEFAULT_SCOPES)
    recovered = mixed_agent.run("sync")

    assert failed.returncode == 1
    assert bitbucket["status"] == "partial"
    assert bitbucket["error"]["code"] == "forbidden"
    assert "required scopes: pipeline" in bitbucket["error"]["message"]
    assert gitlab == ["ok", "ok", "ok"]
    assert len(pull_requests) == 57
    assert deployments == []
    assert _of_gitlab(clean_mixed_run) <= received
    assert received <= clean_mixed_run.versions
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_recovered(
        mixed_agent, receiver, fake_gitlab, fake_bitbucket, clean_mixed_run
    )


def test_repository_deleted_fails_alone(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    fake_bitbucket.latency_s = 0.01
    running = AgentProcess(mixed_agent, "sync", on_output=secret_search.observe)
    running.wait_for(event("fetch progress", provider="bitbucket", stream="activity"))

    fake_bitbucket.delete_repository()
    status = running.finish()
    fake_bitbucket.latency_s = 0.0
    bitbucket, gitlab = _split(_states(mixed_agent))
    again = mixed_agent.run("sync")
    mixed_agent.config["integrations"]["bitbucket"]["repositories"] = []
    without = mixed_agent.run("sync")

    received = _received(receiver, fake_gitlab, fake_bitbucket)
    assert status == 1
    assert bitbucket["status"] == "partial"
    assert bitbucket["error"]["code"] == "not_found"
    assert gitlab == ["ok", "ok", "ok"]
    assert _of_gitlab(clean_mixed_run) <= received
    assert received <= clean_mixed_run.versions
    assert again.returncode == 1
    assert "repository not resolved" in {e["event"] for e in log_events(again)}
    assert without.returncode == 0, without.stderr[-3000:]
    assert sent_twice(receiver) == []


def test_activity_outage_keeps_merge_times(
    bitbucket_agent: AgentSetup,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
) -> None:
    """Merge and close times come from the activity log. When only the pull request
    list was read, the next run must still send them."""
    merged = fake_bitbucket.merge(40, "user-38", date="2024-05-01T10:00:00+00:00")
    declined = fake_bitbucket.decline(41, "user-38", date="2024-05-02T11:00:00+00:00")
    fake_bitbucket.add_fault(r"/pullrequests/activity$", status=500, times=None)
    bitbucket_agent.config["http"] = {"retry_budget_s": 1, "timeout_s": 1}

    failed = bitbucket_agent.run("sync")
    fake_bitbucket.clear_faults()
    recovered = bitbucket_agent.run("sync")

    latest = {r.record["number"]: r.record for r in receiver.records("pull_requests")}
    assert failed.returncode == 1
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert latest[merged["id"]]["state"] == "merged"
    assert latest[merged["id"]]["merged_at"] == "2024-05-01T10:00:00.000Z"
    assert latest[declined["id"]]["state"] == "closed"
    assert latest[declined["id"]]["closed_at"] == "2024-05-02T11:00:00.000Z"
    assert sent_twice(receiver) == []
