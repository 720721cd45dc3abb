"""GitLab failing in every way: retried within the budget, a bad project fails alone,
and the next run recovers everything."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import CleanRun
from tests.faults.support import (
    FAULT_TOKEN,
    AgentProcess,
    SecretSearch,
    event,
    host_of,
    sent_twice,
    versions,
)
from tests.integration.agent import AgentSetup, log_events

SNOWFLAKE = "gitlab-data/snowflake_spend"
CHARTS_ID = "12345679"


def _retries(completed: Any) -> list[dict[str, Any]]:
    return [e for e in log_events(completed) if e["event"] == "http retry"]


def _repository_states(agent: AgentSetup) -> dict[str, dict[str, Any]]:
    report = json.loads(agent.run("status", "--json").stdout)
    return {repo["repository"]: repo for repo in report["repositories"]}


def _assert_complete(
    receiver: Receiver, gitlab: FakeGitLab, clean_run: CleanRun
) -> None:
    assert set(versions(receiver, host_of(gitlab))) == clean_run.versions
    assert sent_twice(receiver) == []


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 429, "headers": {"Retry-After": "1"}}, id="429"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 502}, id="502"),
        pytest.param({"status": 503, "headers": {"Retry-After": "0"}}, id="503"),
        pytest.param({"mode": "truncate"}, id="body-cut-short"),
        pytest.param({"mode": "html"}, id="html-page-200"),
        pytest.param({"mode": "reset"}, id="connection-reset"),
        pytest.param({"delay_s": 2.5}, id="timeout"),
    ],
)
def test_transient_fault_retried_within_run(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    fault: dict[str, Any],
) -> None:
    agent.config["http"] = {"retry_budget_s": 10, "timeout_s": 1}
    fake_gitlab.add_fault(r"/merge_requests$", times=2, **fault)
    fake_gitlab.add_fault(r"/pipelines/\d+$", times=1, **fault)

    started = time.monotonic()
    completed = agent.run("sync")
    elapsed = time.monotonic() - started

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(_retries(completed)) == 3
    assert elapsed < 20
    _assert_complete(receiver, fake_gitlab, clean_run)


def test_slow_responses_within_timeout(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
) -> None:
    agent.config["http"] = {"retry_budget_s": 10, "timeout_s": 1}
    fake_gitlab.add_fault(r"/notes$", delay_s=0.6, times=None)
    fake_gitlab.latency_s = 0.02

    completed = agent.run("sync")

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert _retries(completed) == []
    _assert_complete(receiver, fake_gitlab, clean_run)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 429, "headers": {"Retry-After": "1"}}, id="429-storm"),
        pytest.param({"mode": "html"}, id="html-every-time"),
    ],
)
def test_failing_project_fails_alone(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    fault: dict[str, Any],
) -> None:
    budget = 2
    agent.config["http"] = {"retry_budget_s": budget, "timeout_s": 1}
    fake_gitlab.add_fault(rf"/projects/{CHARTS_ID}/", times=None, **fault)

    started = time.monotonic()
    failed = agent.run("sync")
    elapsed = time.monotonic() - started
    states = _repository_states(agent)
    received = set(versions(receiver, host_of(fake_gitlab)))
    fake_gitlab.clear_faults()
    recovered = agent.run("sync")

    charts = next(s for key, s in states.items() if key.endswith("ee/charts"))
    others = [s for key, s in states.items() if not key.endswith("ee/charts")]
    assert failed.returncode == 1
    # Three streams request the project, each within its retry budget.
    assert elapsed < 3 * (budget + 1) + 5
    # The repository stream needs no request, so the project is partly fetched.
    assert charts["status"] == "partial"
    assert charts["error"]["code"] == "unavailable"
    assert [s["status"] for s in others] == ["ok", "ok"]
    # Everything of the other projects arrived, and nothing but the charts
    # project's repository record (from the group listing) of charts.
    of_charts = {v for v in clean_run.versions if _of_project(v, CHARTS_ID)}
    assert of_charts
    assert received == clean_run.versions - of_charts | {
        v for v in of_charts if v[0] == "repositories"
    }
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_complete(receiver, fake_gitlab, clean_run)


def _of_project(version: tuple[str, str, str], project_id: str) -> bool:
    record = json.loads(version[2])
    if version[0] == "repositories":
        return bool(record["id"] == project_id)
    return bool(record.get("repository_id") == project_id)


def test_token_revoked_midway(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
    secret_search: SecretSearch,
) -> None:
    new_token = "glpat-" + secrets.token_hex(12)
    secret_search.add_secret(new_token)
    fake_gitlab.latency_s = 0.01
    running = AgentProcess(agent, "sync", on_output=secret_search.observe)
    running.wait_for(event("http request", provider="gitlab"), nth=20)

    fake_gitlab.set_token(new_token)
    started = time.monotonic()
    status = running.finish()
    elapsed = time.monotonic() - started
    states = _repository_states(agent)
    heartbeat = agent.run("heartbeat")
    agent.config["integrations"]["gitlab"]["access_token"] = new_token
    fake_gitlab.latency_s = 0.0
    recovered = agent.run("sync")

    codes = {s["error"]["code"] for s in states.values() if s["error"]}
    reported = receiver.heartbeats()[-1].data["repositories"]
    assert status == 1
    assert elapsed < 10
    assert codes == {"unauthorized"}
    assert heartbeat.returncode == 0
    assert any(
        r["error"] and r["error"]["code"] == "unauthorized" for r in reported.values()
    )
    assert all(e.get("status") != 429 for e in running.events)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_complete(receiver, fake_gitlab, clean_run)


def test_project_deleted_fails_alone(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    secret_search: SecretSearch,
) -> None:
    fake_gitlab.latency_s = 0.01
    running = AgentProcess(agent, "sync", on_output=secret_search.observe)
    running.wait_for(event("fetch progress", stream="repository"))

    fake_gitlab.delete_project(SNOWFLAKE)
    status = running.finish()
    fake_gitlab.latency_s = 0.0
    states = _repository_states(agent)
    again = agent.run("sync")
    agent.config["integrations"]["gitlab"]["repositories"].pop(0)
    without = agent.run("sync")

    snowflake = next(s for key, s in states.items() if key.endswith(SNOWFLAKE))
    others = [s for key, s in states.items() if not key.endswith(SNOWFLAKE)]
    assert status == 1
    assert snowflake["status"] == "partial"
    assert snowflake["error"]["code"] == "not_found"
    assert [s["status"] for s in others] == ["ok", "ok"]
    assert {"12345679", "12345680"} <= {
        r.record["repository_id"] for r in receiver.records("deployments")
    }
    assert again.returncode == 1
    assert "repository not resolved" in {e["event"] for e in log_events(again)}
    assert without.returncode == 0, without.stderr[-3000:]
    assert sent_twice(receiver) == []


@pytest.mark.parametrize("redirect", [True, False], ids=["redirect", "no-redirect"])
def test_project_moved(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    redirect: bool,
) -> None:
    assert agent.run("sync").returncode == 0
    first = len(receiver.records("pull_requests"))
    fake_gitlab.move_project(SNOWFLAKE, "gitlab-data/renamed", keep_redirect=redirect)

    moved = agent.run("sync")

    keys = {r.record["key"] for r in receiver.records("repositories")}
    renamed = f"{host_of(fake_gitlab)}/gitlab-data/renamed"
    assert moved.returncode == (0 if redirect else 1), moved.stderr[-3000:]
    assert (renamed in keys) is redirect
    # Unchanged merge requests are not sent again under the new key.
    assert len(receiver.records("pull_requests")) == first
    assert sent_twice(receiver) == []
    if not redirect:
        states = _repository_states(agent)
        # A configured entry that no longer resolves is reported under the entry.
        old = states[fake_gitlab.project_url(SNOWFLAKE)]
        assert old["error"]["code"] == "not_found"
        agent.config["integrations"]["gitlab"]["repositories"][0] = (
            fake_gitlab.project_url("gitlab-data/renamed")
        )
        assert agent.run("sync").returncode == 0
        keys = {r.record["key"] for r in receiver.records("repositories")}
        assert renamed in keys
    assert FAULT_TOKEN not in moved.stderr
