"""Hostile provider data: fields missing, null, of another type or holding any Unicode.

None of it stops the sync of the other records, and what cannot be mapped or
stored is reported with the record's id.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import CleanRun
from tests.faults.support import host_of, versions
from tests.integration.agent import AgentSetup, log_events

SNOWFLAKE = "gitlab-data/snowflake_spend"
UNICODE_TITLE = "Fix 🐛 \u202eRTL\u202c zero\u200bwidth \u2028 漢字 ñ \U0001f600"


def _skipped(completed: Any) -> dict[tuple[str, str], str]:
    """Map (entity, record id) of every 'record skipped' line to its reason."""
    return {
        (e["entity"], e["record_id"]): e["error"]
        for e in log_events(completed)
        if e["event"] == "record skipped"
    }


def _other_projects_complete(
    receiver: Receiver, gitlab: FakeGitLab, clean_run: CleanRun
) -> None:
    """Every record of the two projects besides snowflake_spend arrived."""
    received = set(versions(receiver, host_of(gitlab)))
    others = {
        v
        for v in clean_run.versions
        if json.loads(v[2]).get("repository_id") in ("12345679", "12345680")
    }
    assert others
    assert others <= received


def test_hostile_fields_do_not_stop_sync(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
) -> None:
    add = fake_gitlab.add_merge_request
    dict_title = add({"title": {"text": "not a string"}})
    list_sha = add({"title": "list sha", "sha": ["abc"]})
    nul_title = add({"title": "before\u0000after"})
    nul_author = add(
        {"title": "nul author", "author": {"id": 4242, "username": "x\u0000y"}}
    )
    unicode = add({"title": UNICODE_TITLE})
    odd_types = add(
        {
            "title": 12345,
            "state": 42,
            "draft": "yes",
            "web_url": 7,
            "author": "someone",
            "reviewers": [1, None, {"id": 77, "username": "rev", "name": None}],
            "merged_at": None,
        }
    )
    missing = add({})
    note = fake_gitlab.add_note(
        unicode["iid"], {"system": True, "body": None, "author": []}
    )
    bad_pipeline = fake_gitlab.add_pipeline(
        SNOWFLAKE,
        {
            "status": None,
            "ref": 123,
            "sha": {"a": 1},
            "updated_at": "2024-01-01T00:00:00Z",
        },
    )
    odd_pipeline = fake_gitlab.add_pipeline(
        SNOWFLAKE, {"status": ["x"], "ref": 99, "started_at": 5, "sha": "abc"}
    )
    deployment = fake_gitlab.add_deployment(
        SNOWFLAKE,
        {"status": ["x"], "environment": "prod", "deployable": 5, "ref": "main"},
    )

    first = agent.run("sync")
    second = agent.run("sync")

    skipped = _skipped(first)
    merge_requests = {
        r.record["id"]: r.record for r in receiver.records("pull_requests")
    }
    deployments = {r.record["id"]: r.record for r in receiver.records("deployments")}
    events = {r.record["id"]: r.record for r in receiver.records("pull_request_events")}
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    # Every fixture record arrived unharmed next to the hostile ones.
    assert clean_run.versions <= set(versions(receiver, host_of(fake_gitlab)))
    # Unmappable or unstorable: reported with the record's id, not sent.
    assert "expected text" in skipped[("pull_requests", str(dict_title["id"]))]
    assert "expected text" in skipped[("pull_requests", str(list_sha["id"]))]
    assert "NUL" in skipped[("pull_requests", str(nul_title["id"]))]
    assert "NUL" in skipped[("users", "4242")]
    assert "expected text" in skipped[("deployments", str(bad_pipeline["id"]))]
    assert "timestamp" in skipped[("deployments", str(odd_pipeline["id"]))]
    for sent in (dict_title, list_sha, nul_title, bad_pipeline, odd_pipeline):
        assert str(sent["id"]) not in merge_requests | deployments
    # Mappable: sent with unknown values as null, never invented.
    assert merge_requests[str(unicode["id"])]["title"] == UNICODE_TITLE
    assert merge_requests[str(nul_author["id"])]["author_id"] == "4242"
    assert merge_requests[str(missing["id"])]["title"] is None
    odd = merge_requests[str(odd_types["id"])]
    assert odd["title"] == "12345"
    assert odd["state"] is None
    assert odd["draft"] is None
    assert odd["web_url"] == "7"
    assert odd["author_id"] is None
    assert odd["reviewer_ids"] == ["77"]
    assert events[str(note["id"])]["type"] == "other"
    assert events[str(note["id"])]["actor_id"] is None
    assert deployments[str(deployment["id"])]["environment"] is None
    assert deployments[str(deployment["id"])]["status"] == "other"
    assert second.returncode == 0, second.stderr[-3000:]
    assert receiver.duplicates == 0


def test_invalid_unicode_reported_with_id(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
) -> None:
    target = fake_gitlab.add_merge_request({"title": "note with a broken name"})
    # A lone surrogate cannot be encoded as UTF-8, so it is served as raw JSON.
    broken = (
        b'[{"id": 9901, "body": "x", "system": false, "created_at": '
        b'"2024-01-01T00:00:00Z", "author": {"id": 9902, "username": "u", '
        b'"name": "\\ud800"}}]'
    )
    fake_gitlab.add_fault(
        rf"/merge_requests/{target['iid']}/notes$", status=200, body=broken, times=None
    )

    completed = agent.run("sync")

    errors = " ".join(
        f"{e.get('record_id', '')} {e.get('error', '')}"
        for e in log_events(completed)
        if e["level"] == "error"
    )
    assert "command crashed" not in completed.stderr
    assert "9902" in errors
    assert "not valid Unicode" in errors
    _other_projects_complete(receiver, fake_gitlab, clean_run)


def test_malformed_list_fails_only_its_stream(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    clean_run: CleanRun,
) -> None:
    fake_gitlab.add_fault(
        r"/projects/12345678/merge_requests$",
        status=200,
        body=b'[null, "text", 5, [], {"id": "x", "iid": null}]',
        times=None,
    )

    completed = agent.run("sync")
    report = json.loads(agent.run("status", "--json").stdout)

    snowflake = next(
        r for r in report["repositories"] if r["repository"].endswith(SNOWFLAKE)
    )
    assert "command crashed" not in completed.stderr
    assert snowflake["status"] in ("ok", "partial")
    if snowflake["error"]:
        assert snowflake["error"]["code"] == "invalid_data"
    assert {r.record["id"] for r in receiver.records("deployments")} >= {
        json.loads(v[2])["id"]
        for v in clean_run.versions
        if v[0] == "deployments" and SNOWFLAKE not in v[2]
    }
    _other_projects_complete(receiver, fake_gitlab, clean_run)
