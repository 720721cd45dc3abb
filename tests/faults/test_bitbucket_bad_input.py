"""Hostile Bitbucket data: fields missing, null, of another type or holding any
Unicode, in pull requests, comments, commits, pipelines and deployments.

None of it stops the sync of the other records, and what cannot be mapped or
stored is reported with the record's id.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.bitbucket_data import PULL_REQUEST_STATES, REPOSITORY
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import CleanRun
from tests.faults.support import host_of, sent_twice, versions
from tests.integration.agent import AgentSetup, log_events
from tests.integration.expected_bitbucket import REPOSITORY_UUID

UNICODE_TEXT = "Fix 🐛 \u202eRTL\u202c zero\u200bwidth \u2028 漢字 ñ \U0001f600"


def _skipped(completed: Any) -> dict[tuple[str, str], str]:
    """Map (entity, record id) of every 'record skipped' line to its reason."""
    return {
        (e["entity"], e["record_id"]): e["error"]
        for e in log_events(completed)
        if e["event"] == "record skipped"
    }


def _by_id(receiver: Receiver, entity: str) -> dict[str, dict[str, Any]]:
    """Return the last received version of each record of ``entity``, by id."""
    return {r.record["id"]: r.record for r in receiver.records(entity, "bitbucket")}


def _pr_id(pull_request: dict[str, Any]) -> str:
    return f"{REPOSITORY_UUID}:{pull_request['id']}"


def test_hostile_fields_do_not_stop_sync(
    bitbucket_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_bitbucket_run: CleanRun,
) -> None:
    fake = fake_bitbucket
    live = fake.repository().pull_requests
    # Pull requests. The fake needs valid times and user objects to list them.
    dict_title = fake.add_pull_request({"title": {"text": "not a string"}})
    list_branch = fake.add_pull_request(
        {"title": "list branch", "source": {"branch": {"name": ["x"]}}}
    )
    nul_title = fake.add_pull_request({"title": "before\u0000after"})
    nul_author = fake.add_pull_request(
        {
            "title": "nul author",
            "author": {"account_id": "nul-author", "nickname": "x\u0000y"},
        }
    )
    unicode = fake.add_pull_request({"title": UNICODE_TEXT})
    odd_types = fake.add_pull_request(
        {
            "title": 12345,
            "draft": "yes",
            "author": 5,
            "merge_commit": "abc",
            "reviewers": [
                {"type": "user", "nickname": "no-id"},
                {"account_id": "rev-77", "nickname": "rev", "display_name": None},
            ],
        }
    )
    missing = fake.add_pull_request(
        {
            "title": None,
            "source": None,
            "destination": None,
            "author": None,
            "links": None,
            "closed_by": None,
        }
    )
    bad_time = fake.add_pull_request({"title": "bad created_on"})
    live[bad_time["id"]]["created_on"] = 12345
    # Comments: bodies are never sent, so a NUL in one harms nothing.
    comments = [
        fake.add_comment(unicode["id"], {"user": 5, "inline": "yes", "deleted": "no"}),
        fake.add_comment(unicode["id"], {"content": {"raw": "body \u0000 here"}}),
        fake.add_comment(
            unicode["id"],
            {"user": {"account_id": "nul-commenter", "nickname": "a\u0000b"}},
        ),
    ]
    nul_comment = fake.add_comment(unicode["id"], {"id": "c\u0000d"})
    # Commits of one pull request, served by the commits endpoint as they are.
    fake.repository().commits[missing["id"]] = [
        {"hash": {"a": 1}, "message": "dict hash"},
        {"hash": "c0ffee01", "message": "bad date", "date": "not a date"},
        {
            "hash": "c0ffee02",
            "message": ["not", "text"],
            "date": None,
            "author": {"raw": 5, "user": "someone"},
        },
        {"hash": "c0ffee03", "message": "fix\u0000bug"},
        {"hash": "c0ffee04", "message": UNICODE_TEXT, "author": {"raw": "漢字 <x@y>"}},
    ]
    # Pipelines and deployments.
    dict_sha = fake.add_pipeline(
        {"state": None, "target": {"ref_name": 123, "commit": {"hash": {"a": 1}}}}
    )
    int_time = fake.add_pipeline({"state": ["x"], "target": "main", "completed_on": 5})
    nul_ref = fake.add_pipeline({"target": {"ref_name": "main\u0000x"}})
    odd_pipeline = fake.add_pipeline({"state": 5, "target": None, "build_number": {}})
    odd_deployment = fake.add_deployment(
        {"state": ["x"], "environment": "prod", "release": 5}
    )
    bad_start = fake.add_deployment(
        {"state": {"name": "COMPLETED", "started_on": 7}, "environment": {}}
    )
    dict_environment = fake.add_deployment({"environment": {"name": {"x": 1}}})
    nul_environment = fake.add_deployment({"environment": {"name": "prod\u0000"}})
    unicode_environment = fake.add_deployment({"environment": {"name": UNICODE_TEXT}})

    first = bitbucket_agent.run("sync")
    second = bitbucket_agent.run("sync")

    skipped = _skipped(first)
    pull_requests = _by_id(receiver, "pull_requests")
    events = _by_id(receiver, "pull_request_events")
    commits = _by_id(receiver, "pull_request_commits")
    deployments = _by_id(receiver, "deployments")
    received = set(versions(receiver, host_of(fake_gitlab), host_of(fake)))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    # Every fixture record arrived unharmed next to the hostile ones.
    assert clean_bitbucket_run.versions <= received
    # Unmappable or unstorable: reported with the record's id, not sent.
    assert "expected text" in skipped[("pull_requests", _pr_id(dict_title))]
    assert "expected text" in skipped[("pull_requests", _pr_id(list_branch))]
    assert "NUL" in skipped[("pull_requests", _pr_id(nul_title))]
    assert "timestamp" in skipped[("pull_requests", _pr_id(bad_time))]
    assert "NUL" in skipped[("users", "nul-author")]
    assert "NUL" in skipped[("users", "nul-commenter")]
    assert "NUL" in skipped[("pull_request_events", "comment:c\u0000d")]
    assert "expected text" in skipped[("pull_request_commits", "{'a': 1}")]
    assert "Invalid isoformat" in skipped[("pull_request_commits", "c0ffee01")]
    assert "NUL" in skipped[("pull_request_commits", "c0ffee03")]
    assert "expected text" in skipped[("deployments", dict_sha["uuid"])]
    assert "timestamp" in skipped[("deployments", int_time["uuid"])]
    assert "NUL" in skipped[("deployments", nul_ref["uuid"])]
    assert "timestamp" in skipped[("deployments", bad_start["uuid"])]
    assert "expected text" in skipped[("deployments", dict_environment["uuid"])]
    assert "NUL" in skipped[("deployments", nul_environment["uuid"])]
    for sent in (dict_title, list_branch, nul_title, bad_time):
        assert _pr_id(sent) not in pull_requests
    assert f"comment:{nul_comment['id']}" not in events
    assert {"c0ffee01", "c0ffee03", "{'a': 1}"}.isdisjoint(commits)
    for sent in (dict_sha, int_time, nul_ref, bad_start, dict_environment):
        assert sent["uuid"] not in deployments
    assert nul_environment["uuid"] not in deployments
    # Mappable: sent with unknown values as null, never invented.
    assert pull_requests[_pr_id(unicode)]["title"] == UNICODE_TEXT
    assert pull_requests[_pr_id(nul_author)]["author_id"] == "nul-author"
    odd = pull_requests[_pr_id(odd_types)]
    assert odd["title"] == "12345"
    assert odd["draft"] is None
    assert odd["author_id"] is None
    assert odd["merge_commit_sha"] is None
    assert odd["reviewer_ids"] == ["rev-77"]
    empty = pull_requests[_pr_id(missing)]
    assert empty["title"] is None
    assert empty["source_branch"] is None
    assert empty["author_id"] is None
    assert empty["web_url"] is None
    for comment in comments:
        assert f"comment:{comment['id']}" in events
    assert events[f"comment:{comments[0]['id']}"]["actor_id"] is None
    assert events[f"comment:{comments[0]['id']}"]["type"] == "comment"
    odd_commit = commits["c0ffee02"]
    assert odd_commit["title"] is None
    assert odd_commit["author_name"] is None
    assert odd_commit["author_id"] is None
    assert commits["c0ffee04"]["title"] == UNICODE_TEXT
    assert commits["c0ffee04"]["author_name"] == "漢字"
    assert deployments[odd_pipeline["uuid"]]["status"] == "other"
    assert deployments[odd_pipeline["uuid"]]["ref"] is None
    assert deployments[odd_pipeline["uuid"]]["web_url"] is None
    assert deployments[odd_deployment["uuid"]]["environment"] is None
    assert deployments[odd_deployment["uuid"]]["status"] == "other"
    assert deployments[odd_deployment["uuid"]]["sha"] is None
    assert deployments[unicode_environment["uuid"]]["environment"] == UNICODE_TEXT
    assert second.returncode == 0, second.stderr[-3000:]
    assert receiver.duplicates == 0
    assert sent_twice(receiver) == []


def test_invalid_unicode_reported_with_id(
    bitbucket_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_bitbucket_run: CleanRun,
) -> None:
    target = fake_bitbucket.add_pull_request({"title": "commit with a broken name"})
    # A lone surrogate cannot be encoded as UTF-8, so it is served as raw JSON.
    broken = (
        b'{"pagelen": 100, "values": [{"hash": "d00d01", "message": "x", '
        b'"date": "2024-01-01T00:00:00+00:00", "author": {"raw": "\\ud800 <a@b>"}}]}'
    )
    fake_bitbucket.add_fault(
        rf"/pullrequests/{target['id']}/commits$", status=200, body=broken, times=None
    )

    completed = bitbucket_agent.run("sync")

    skipped = _skipped(completed)
    received = set(versions(receiver, host_of(fake_gitlab), host_of(fake_bitbucket)))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "not valid Unicode" in skipped[("pull_request_commits", "d00d01")]
    assert _pr_id(target) in _by_id(receiver, "pull_requests")
    assert clean_bitbucket_run.versions <= received


def _first_pull_request_page(fake: FakeBitbucket) -> dict[str, Any]:
    """Return the first page of the pull request list as the agent requests it."""
    query = urlencode(
        [
            *[("state", state) for state in PULL_REQUEST_STATES],
            ("sort", "updated_on"),
            ("pagelen", "50"),
            (
                "fields",
                "+values.participants,+values.reviewers,"
                "-values.description,-values.summary",
            ),
        ]
    )
    url = f"{fake.url}/repositories/{REPOSITORY}/pullrequests?{query}"
    request = Request(url, headers={"Authorization": f"Bearer {fake.token}"})
    with urlopen(request, timeout=10) as response:
        page: dict[str, Any] = json.load(response)
    return page


def test_bad_participant_fails_only_its_pull_request(
    bitbucket_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_bitbucket_run: CleanRun,
) -> None:
    page = _first_pull_request_page(fake_bitbucket)
    hostile = page["values"][0]
    hostile["participants"] = [
        {
            "approved": True,
            "user": {"account_id": "approver-1", "nickname": "approver"},
            "participated_on": "yesterday",
        }
    ]
    fake_bitbucket.add_fault(r"/pullrequests$", status=200, body=page, times=1)

    first = bitbucket_agent.run("sync")

    skipped = _skipped(first)
    pull_requests = _by_id(receiver, "pull_requests")
    hostile_id = f"{REPOSITORY_UUID}:{hostile['id']}"
    others = {f"{REPOSITORY_UUID}:{raw['id']}" for raw in page["values"][1:]}
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    approval = f"approval:{hostile_id}:approver-1"
    assert "yesterday" in skipped[("pull_request_events", approval)]
    assert hostile_id in pull_requests
    assert others <= set(pull_requests)
    assert len(pull_requests) == 57


def test_malformed_repository_fails_alone(
    mixed_agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    clean_mixed_run: CleanRun,
) -> None:
    lookup = rf"/repositories/{REPOSITORY}$"
    fake_bitbucket.add_fault(
        lookup, status=200, body={"uuid": None, "slug": 5}, times=None
    )

    failed = mixed_agent.run("sync")
    report = json.loads(mixed_agent.run("status", "--json").stdout)
    gitlab_received = set(versions(receiver, host_of(fake_gitlab)))
    fake_bitbucket.clear_faults()
    recovered = mixed_agent.run("sync")

    states = {r["repository"]: r for r in report["repositories"]}
    entry = states[fake_bitbucket.repository_url()]
    of_gitlab = {
        v for v in clean_mixed_run.versions if json.loads(v[2])["provider"] == "gitlab"
    }
    received = set(versions(receiver, host_of(fake_gitlab), host_of(fake_bitbucket)))
    assert failed.returncode == 1
    assert "command crashed" not in failed.stderr
    assert "Traceback" not in failed.stderr
    assert entry["error"]["code"] == "invalid_data"
    assert of_gitlab <= gitlab_received
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert received == clean_mixed_run.versions
    assert sent_twice(receiver) == []
