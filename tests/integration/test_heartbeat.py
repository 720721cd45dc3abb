"""Heartbeats and the signed commands MHQ returns with them."""

from __future__ import annotations

import json

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import make_client_secret
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, log_events


def test_heartbeat_reports_state(agent: AgentSetup, receiver: Receiver) -> None:
    assert agent.run("sync").returncode == 0

    completed = agent.run("heartbeat")

    assert completed.returncode == 0, completed.stderr[-2000:]
    [heartbeat] = receiver.heartbeats()
    data = heartbeat.data
    assert {
        "started_at",
        "uptime_s",
        "hostname",
        "jobs",
        "backlog",
        "repositories",
        "database",
    } <= set(data)
    assert data["database"] == "ok"
    assert data["jobs"]["fetch"]["last_status"] == "ok"
    assert data["jobs"]["push"]["last_finished_at"].endswith("Z")
    assert data["jobs"]["heartbeat"]["next_run_at"].endswith("Z")
    assert data["backlog"]["unsent_records"] == 0
    assert len(data["repositories"]) == 3
    assert all(r["status"] == "ok" for r in data["repositories"].values())
    assert heartbeat.envelope["agent_id"]


def test_sync_now_runs_once(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    command = {"id": "cmd-1", "command": "sync_now", "parameters": {}}
    receiver.queue_commands([command])
    receiver.queue_commands([command])

    first = agent.run("heartbeat")
    second = agent.run("heartbeat")
    third = agent.run("heartbeat")

    assert first.returncode == 0, first.stderr[-2000:]
    assert len(receiver.records("pull_requests")) == 24
    assert second.returncode == third.returncode == 0
    assert len(receiver.batches()) == 1
    results = [h.data["command_results"] for h in receiver.heartbeats()]
    assert results[0] == []
    assert [(r["id"], r["status"]) for r in results[1]] == [("cmd-1", "ok")]
    assert results[2] == []


def test_forged_command_ignored(agent: AgentSetup, receiver: Receiver) -> None:
    receiver.queue_commands(
        [{"id": "cmd-x", "command": "sync_now"}], secret=make_client_secret()
    )

    completed = agent.run("heartbeat")

    assert completed.returncode == 0
    assert receiver.batches() == []
    events = {e["event"] for e in log_events(completed)}
    assert (
        "heartbeat response carries commands with an invalid signature; ignored"
        in events
    )


def test_resync_sends_again(agent: AgentSetup, receiver: Receiver) -> None:
    assert agent.run("sync").returncode == 0
    key = receiver.records("repositories")[0].record["key"]
    receiver.queue_commands(
        [
            {
                "id": "cmd-2",
                "command": "resync",
                "parameters": {"repositories": [key], "since": "2020-01-01T00:00:00Z"},
            }
        ]
    )

    completed = agent.run("heartbeat")

    assert completed.returncode == 0, completed.stderr[-2000:]
    resent = [
        r
        for r in receiver.records()
        if r.message_id != receiver.batches()[0].message_id
    ]
    assert resent
    assert all(
        r.record.get("updated_at", "9") >= "2020"
        for r in resent
        if r.entity == "pull_requests"
    )
    assert {r.entity for r in resent} <= {
        "pull_requests",
        "pull_request_events",
        "pull_request_commits",
        "deployments",
        "repositories",
    }


def test_unknown_command_rejected(agent: AgentSetup, receiver: Receiver) -> None:
    receiver.queue_commands([{"id": "cmd-3", "command": "format_disk"}])

    assert agent.run("heartbeat").returncode == 0
    assert agent.run("heartbeat").returncode == 0

    results = receiver.heartbeats()[1].data["command_results"]
    assert [(r["id"], r["status"]) for r in results] == [("cmd-3", "rejected")]
    assert "unknown command" in json.dumps(results)
