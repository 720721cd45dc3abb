"""``mhq-agent sync`` against the fake GitLab: every fixture record arrives mapped."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration import expected
from tests.integration.agent import AgentSetup, log_events


def _by_id(receiver: Receiver, entity: str) -> dict[str, dict[str, Any]]:
    return {r.record["id"]: r.record for r in receiver.records(entity)}


@pytest.fixture
def synced(agent: AgentSetup, receiver: Receiver) -> Receiver:
    completed = agent.run("sync")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return receiver


def test_sync_delivers_every_fixture_record(synced: Receiver) -> None:
    counts = Counter(r.entity for r in synced.records())
    assert counts["repositories"] == 3
    assert counts["pull_requests"] == len(expected.merge_requests()) == 24
    assert counts["pull_request_commits"] == len(
        expected.load("merge_request_commits.json")
    )
    assert counts["pull_request_events"] == len(
        expected.load("merge_request_notes.json")
    )
    pipelines = len(expected.load("pipelines.json")) + len(
        expected.load("pipeline_details.json")
    )
    assert counts["deployments"] == pipelines + len(expected.load("deployments.json"))
    assert synced.duplicates == 0


def test_merge_requests_mapped(synced: Receiver) -> None:
    received = _by_id(synced, "pull_requests")
    for mr_id, raw in expected.merge_requests().items():
        record = received[mr_id]
        merged_by = raw.get("merge_user") or raw.get("merged_by")
        assert record["repository_id"] == "12345678"
        assert record["number"] == raw["iid"]
        assert record["title"] == raw["title"]
        assert record["state"] == expected.STATE[raw["state"]]
        assert record["draft"] is bool(raw["draft"] or raw["work_in_progress"])
        assert record["author_id"] == str(raw["author"]["id"])
        assert record["created_at"] == expected.utc(raw["created_at"])
        assert record["updated_at"] == expected.utc(raw["updated_at"])
        assert record["merged_at"] == expected.utc(raw.get("merged_at"))
        assert record["closed_at"] == expected.utc(raw.get("closed_at"))
        assert record["merged_by_id"] == (str(merged_by["id"]) if merged_by else None)
        assert record["source_branch"] == raw["source_branch"]
        assert record["target_branch"] == raw["target_branch"]
        assert record["head_sha"] == raw["sha"]
        assert record["merge_commit_sha"] == raw["merge_commit_sha"]
        assert record["squash_commit_sha"] == raw["squash_commit_sha"]
        assert record["reviewer_ids"] == []
        assert record["web_url"] == raw["web_url"]
        assert record["additions"] is None
        assert record["provider"] == "gitlab"


def test_commits_mapped(synced: Receiver) -> None:
    ids_by_iid = {mr["iid"]: str(mr["id"]) for mr in expected.merge_requests().values()}
    received = {
        (r.record["pull_request_id"], r.record["id"]): r.record
        for r in synced.records("pull_request_commits")
    }
    commits = expected.load("merge_request_commits.json")
    for raw, url in zip(
        commits, expected.urls("merge_request_commits.urls.txt"), strict=True
    ):
        iid = int(re.search(r"/merge_requests/(\d+)/", url).group(1))  # type: ignore[union-attr]
        record = received[(ids_by_iid[iid], raw["id"])]
        assert record["author_name"] == raw["author_name"]
        assert record["author_id"] is None
        assert record["authored_at"] == expected.utc(raw["authored_date"])
        assert record["committed_at"] == expected.utc(raw["committed_date"])
        assert record["title"] == raw["title"]


def test_note_events_mapped(synced: Receiver) -> None:
    received = _by_id(synced, "pull_request_events")
    for raw in expected.load("merge_request_notes.json"):
        record = received[str(raw["id"])]
        assert record["type"] == expected.NOTE_TYPES[raw["id"]], raw["body"][:40]
        assert record["pull_request_id"] == str(raw["noteable_id"])
        assert record["actor_id"] == str(raw["author"]["id"])
        assert record["created_at"] == expected.utc(raw["created_at"])


def test_pipelines_mapped(synced: Receiver) -> None:
    received = {
        r.record["id"]: r.record
        for r in synced.records("deployments")
        if r.record["source"] == "pipeline"
    }
    listed = [(raw, "merico-dev/ee/charts") for raw in expected.load("pipelines.json")]
    detailed = [
        (raw, "merico-dev/ee/vdev.co") for raw in expected.load("pipeline_details.json")
    ]
    for raw, project in listed + detailed:
        record = received[str(raw["id"])]
        assert record["repository_id"] == expected.PROJECT_IDS[project]
        assert record["status"] == expected.PIPELINE_STATUS[raw["status"]]
        assert record["environment"] is None
        assert record["ref"] == raw["ref"]
        assert record["sha"] == raw["sha"]
        assert record["created_at"] == expected.utc(raw["created_at"])
        assert record["started_at"] == expected.utc(raw.get("started_at"))
        assert record["finished_at"] == expected.utc(raw.get("finished_at"))
        assert record["web_url"] == raw["web_url"]


def test_deployments_mapped(synced: Receiver) -> None:
    received = {
        r.record["id"]: r.record
        for r in synced.records("deployments")
        if r.record["source"] == "deployment"
    }
    for raw in expected.load("deployments.json"):
        record = received[str(raw["id"])]
        job = raw["deployable"]
        assert record["repository_id"] == "12345680"
        assert record["environment"] == raw["environment"]["name"]
        assert record["status"] == expected.DEPLOYMENT_STATUS[raw["status"]]
        assert record["ref"] == raw["ref"]
        assert record["sha"] == raw["sha"]
        assert record["created_at"] == expected.utc(raw["created_at"])
        assert record["started_at"] == expected.utc(job["started_at"])
        assert record["finished_at"] == expected.utc(job["finished_at"])
        assert record["web_url"] == job["web_url"]


def test_repositories_and_users_mapped(
    synced: Receiver, fake_gitlab: FakeGitLab
) -> None:
    repositories = {r.record["key"]: r.record for r in synced.records("repositories")}
    host = fake_gitlab.url.split("://", 1)[1]
    for path, project_id in expected.PROJECT_IDS.items():
        record = repositories[f"{host}/{path}"]
        assert record["id"] == project_id
        assert record["name"] == path.rsplit("/", 1)[1]
        assert record["namespace"] == path.rsplit("/", 1)[0]
        assert record["default_branch"] == "master"
    users = _by_id(synced, "users")
    referenced = {r.record["author_id"] for r in synced.records("pull_requests")}
    referenced |= {r.record["actor_id"] for r in synced.records("pull_request_events")}
    assert referenced <= set(users)
    assert all(re.fullmatch(r"user-\d\d", u["username"]) for u in users.values())


def test_payloads_hold_no_private_text(synced: Receiver) -> None:
    text = json.dumps([m.envelope for m in synced.batches()], ensure_ascii=False)
    notes = expected.load("merge_request_notes.json")
    assert "@example.com" not in text
    assert '"description"' not in text
    assert '"body"' not in text
    assert "Once this is merged, let's make this a release version?" not in text
    assert all(note["body"] not in text for note in notes if len(note["body"]) > 20)


def test_every_record_sent_once(synced: Receiver) -> None:
    keys = Counter(
        (r.entity, r.record.get("pull_request_id"), r.record["id"])
        for r in synced.records()
    )
    assert [key for key, count in keys.items() if count > 1] == []


def test_unchanged_sync_sends_nothing(
    synced: Receiver, agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    before = len(synced.batches())
    fake_gitlab.reset_log()

    completed = agent.run("sync")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(synced.batches()) == before
    lists = Counter(
        (match.group(1), match.group(2))
        for entry in fake_gitlab.requests()
        if (
            match := re.fullmatch(
                r"/api/v4/projects/(\d+)/(merge_requests|pipelines|deployments)",
                entry.path,
            )
        )
    )
    assert len(lists) == 9
    assert max(lists.values()) == 1
    assert fake_gitlab.request_count(r"/(commits|notes|approvals)$") == 0
    assert fake_gitlab.request_count(r"/pipelines/\d+$") == 0


def test_changed_merge_request_sent_once(
    synced: Receiver, agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    fake_gitlab.update_merge_request(9, title="Renamed upstream")
    assert agent.run("sync").returncode == 0
    assert agent.run("sync").returncode == 0

    new_batches = synced.batches()[1:]
    records = [
        r for r in synced.records() if r.message_id != synced.batches()[0].message_id
    ]
    assert len(new_batches) == 1
    assert [(r.entity, r.record["number"]) for r in records] == [("pull_requests", 9)]
    assert records[0].record["title"] == "Renamed upstream"


def test_added_and_deleted_notes_sent(
    synced: Receiver, agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    note = fake_gitlab.add_note(3, {"body": "new comment", "system": False})
    assert agent.run("sync").returncode == 0
    fake_gitlab.delete_note(3, note["id"])
    assert agent.run("sync").returncode == 0

    events = [r.record for r in synced.records("pull_request_events")]
    deletions = [r.record for r in synced.records("deletions")]
    assert [e["type"] for e in events if e["id"] == str(note["id"])] == ["comment"]
    assert deletions == [
        {"provider": "gitlab", "id": str(note["id"]), "entity": "pull_request_events"}
    ]


def test_signature_and_encryption_verified(synced: Receiver) -> None:
    attempts = synced.attempts()
    assert attempts
    assert all(a.status == 200 for a in attempts), [a.error for a in attempts]
    for message in synced.batches():
        assert message.protected_header["alg"] == "RSA-OAEP-256"
        assert message.protected_header["enc"] == "A256GCM"
        assert message.protected_header["zip"] == "DEF"
        assert message.headers["webhook-id"] == message.message_id
        assert message.headers["user-agent"].startswith("mhq-sync-agent/")


def test_sync_logs_json_progress(agent: AgentSetup) -> None:
    completed = agent.run("sync")

    events = log_events(completed)
    progress = [e for e in events if e["event"] == "fetch progress"]
    requests = [e for e in events if e["event"] == "http request"]
    assert progress
    assert {"repository", "stream", "pages", "items"} <= set(progress[0])
    assert all({"method", "url", "status", "elapsed_ms"} <= set(e) for e in requests)
    assert "glpat-test-token" not in completed.stderr


def test_group_url_expands_subgroups(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    agent.config["integrations"]["gitlab"]["repositories"] = [
        f"{fake_gitlab.url}/merico-dev"
    ]

    assert agent.run("sync").returncode == 0

    keys = sorted(
        r.record["key"].split("/", 1)[1] for r in receiver.records("repositories")
    )
    assert keys == ["merico-dev/ee/charts", "merico-dev/ee/vdev.co"]


def test_project_by_numeric_id(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["integrations"]["gitlab"]["repositories"] = ["12345679"]

    assert agent.run("sync").returncode == 0

    assert [r.record["id"] for r in receiver.records("repositories")] == ["12345679"]


def test_failing_project_does_not_stop_others(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    fake_gitlab.add_fault(r"/projects/12345679/pipelines$", status=500, times=None)
    agent.config["integrations"]["gitlab"]["repositories"].append(
        f"{fake_gitlab.url}/no-such/project"
    )

    completed = agent.run("sync")
    status = json.loads(agent.run("status", "--json").stdout)

    assert completed.returncode == 1
    states = {r["repository"].split("/", 1)[1]: r for r in status["repositories"]}
    assert states["gitlab-data/snowflake_spend"]["status"] == "ok"
    assert states["merico-dev/ee/charts"]["status"] == "partial"
    assert states["merico-dev/ee/vdev.co"]["status"] == "ok"
    assert any(
        r["status"] == "failed" and r["error"]["code"] == "not_found"
        for r in status["repositories"]
    )
    assert len(receiver.records("pull_requests")) == 24


def test_missing_commits_keep_stored_ones(
    synced: Receiver, agent: AgentSetup, fake_gitlab: FakeGitLab
) -> None:
    fake_gitlab.add_note(3, {"body": "after the source project went away"})
    fake_gitlab.add_fault(r"/merge_requests/3/commits$", status=404, times=None)

    completed = agent.run("sync")

    events = log_events(completed)
    skipped = [e for e in events if e["event"] == "record skipped"]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert synced.records("deletions") == []
    assert any("404 for its commits" in e["error"] for e in skipped)
    assert len(synced.records("pull_request_events")) == 27
