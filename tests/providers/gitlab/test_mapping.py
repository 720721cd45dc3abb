"""GitLab API objects to records, checked field by field against the raw fixtures.

The expected value of each field is computed here from the raw object with tables of
this file's own, so a mistake in the mapping tables shows up as a mismatch.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.processing.records import DEPLOYMENT_STATUSES, EVENT_TYPES, FIELDS, Record
from agent.providers.base import RepositoryRef
from agent.providers.gitlab import mapping

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gitlab"
REF = RepositoryRef("gitlab", "gitlab.com/gitlab-data/snowflake_spend", "12345678")
MR_ID = "32348491"

UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")

STATES = {"opened": "open", "locked": "open", "merged": "merged", "closed": "closed"}

PIPELINE_STATUSES = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "running": "running",
    "pending": "pending",
    "created": "pending",
    "waiting_for_resource": "pending",
    "preparing": "pending",
    "scheduled": "pending",
    "skipped": "skipped",
    # A pipeline that waits for someone to start a manual job has no outcome yet
    # and may never get one.
    "manual": "other",
}

DEPLOYMENT_STATUS_MAP = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "running": "running",
    "created": "pending",
    "blocked": "pending",
    "skipped": "skipped",
    # Not GitLab deployment statuses: the fixtures were edited to contain them.
    "completed": "other",
    "undeployed": "other",
}

# The first line of every system note in the fixtures, and the event it is.
SYSTEM_NOTE_TYPES = {
    "added 1 commit": "commit_pushed",
    "unmarked as a **Work In Progress**": "ready_for_review",
    "merged": "merged",
    "approved this merge request": "approved",
    "unapproved this merge request": "unapproved",
}
OTHER_SYSTEM_NOTE_PREFIXES = ("assigned to ", "mentioned in commit ", "restored source")


def read(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def merge_requests() -> list[dict[str, Any]]:
    """Every distinct merge request of the three merge request captures."""
    by_id: dict[int, dict[str, Any]] = {}
    for name in (
        "merge_requests",
        "merge_requests_for_mr_commit_test",
        "merge_requests_for_mr_notes_test",
    ):
        for raw in read(name):
            by_id.setdefault(raw["id"], raw)
    return list(by_id.values())


def utc(value: str | None) -> datetime | None:
    """Return the instant of a raw GitLab timestamp, or None."""
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def user_ref(raw: Any) -> str | None:
    return str(raw["id"]) if raw else None


# -- expected records, computed from the raw objects ---------------------------------


def expected_merge_request(raw: dict[str, Any]) -> dict[str, Any]:
    changes = raw.get("changes_count")
    return {
        "provider": "gitlab",
        "id": str(raw["id"]),
        "repository_id": REF.api_id,
        "number": raw["iid"],
        "title": raw["title"],
        "state": STATES[raw["state"]],
        "draft": raw["draft"] or raw["work_in_progress"],
        "author_id": user_ref(raw["author"]),
        "created_at": utc(raw["created_at"]),
        "updated_at": utc(raw["updated_at"]),
        "merged_at": utc(raw["merged_at"]),
        "closed_at": utc(raw["closed_at"]),
        "merged_by_id": user_ref(raw.get("merge_user") or raw.get("merged_by")),
        "source_branch": raw["source_branch"],
        "target_branch": raw["target_branch"],
        "head_sha": raw["sha"],
        "merge_commit_sha": raw["merge_commit_sha"],
        "squash_commit_sha": raw["squash_commit_sha"],
        "additions": raw.get("additions"),
        "deletions": raw.get("deletions"),
        "changed_files": int(changes) if changes is not None else None,
        "reviewer_ids": [str(reviewer["id"]) for reviewer in raw["reviewers"]],
        "web_url": raw["web_url"],
    }


def expected_note_type(raw: dict[str, Any]) -> str:
    if not raw["system"]:
        return "review_comment" if raw["type"] == "DiffNote" else "comment"
    first = raw["body"].splitlines()[0]
    if first.startswith(OTHER_SYSTEM_NOTE_PREFIXES):
        return "other"
    return SYSTEM_NOTE_TYPES[first]


def expected_note(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": "gitlab",
        "id": str(raw["id"]),
        "pull_request_id": str(raw["noteable_id"]),
        "type": expected_note_type(raw),
        "actor_id": user_ref(raw["author"]),
        "created_at": utc(raw["created_at"]),
    }


def expected_commit(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": "gitlab",
        "id": raw["id"],
        "pull_request_id": MR_ID,
        "author_name": raw["author_name"],
        "author_id": None,
        "authored_at": utc(raw["authored_date"]),
        "committed_at": utc(raw["committed_date"]),
        "title": raw["message"].strip().split("\n")[0].strip(),
    }


def expected_pipeline(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": "gitlab",
        "id": str(raw["id"]),
        "repository_id": REF.api_id,
        "source": "pipeline",
        "environment": None,
        "status": PIPELINE_STATUSES[raw["status"]],
        "ref": raw["ref"],
        "sha": raw["sha"],
        "created_at": utc(raw["created_at"]),
        "started_at": utc(raw.get("started_at")),
        "finished_at": utc(raw.get("finished_at")),
        "web_url": raw["web_url"],
    }


def expected_deployment(raw: dict[str, Any]) -> dict[str, Any]:
    job = raw["deployable"]
    return {
        "provider": "gitlab",
        "id": str(raw["id"]),
        "repository_id": REF.api_id,
        "source": "deployment",
        "environment": raw["environment"]["name"],
        "status": DEPLOYMENT_STATUS_MAP[raw["status"]],
        "ref": raw["ref"],
        "sha": raw["sha"],
        "created_at": utc(raw["created_at"]),
        "started_at": utc(job["started_at"]),
        "finished_at": utc(job["finished_at"]),
        "web_url": job["web_url"],
    }


def field_cases(
    records: list[dict[str, Any]],
    entity: str,
    label: Callable[[dict[str, Any]], str],
) -> list[Any]:
    """One case per raw record and field, with ids such as ``iid3-state``."""
    names = ("provider", *FIELDS[entity])
    return [
        pytest.param(raw, name, id=f"{label(raw)}-{name}")
        for raw in records
        for name in names
    ]


def check_field(record: Record, name: str, expected: Any) -> None:
    actual = record.payload[name]
    if isinstance(expected, datetime):
        assert isinstance(actual, str)
        assert UTC_Z.fullmatch(actual), f"{actual!r} is not RFC 3339 UTC with Z"
        assert datetime.fromisoformat(actual) == expected
    else:
        assert actual == expected


# -- fixtures, field by field --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(merge_requests(), "pull_requests", lambda r: f"iid{r['iid']}"),
)
def test_merge_request_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.merge_request(REF, raw)

    check_field(record, name, expected_merge_request(raw)[name])


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(
        read("merge_request_notes"), "pull_request_events", lambda r: f"note{r['id']}"
    ),
)
def test_note_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.note_event(REF, str(raw["noteable_id"]), raw)

    check_field(record, name, expected_note(raw)[name])


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(
        read("merge_request_commits"), "pull_request_commits", lambda r: r["short_id"]
    ),
)
def test_commit_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.commit(REF, MR_ID, raw)

    check_field(record, name, expected_commit(raw)[name])


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(read("pipelines"), "deployments", lambda r: f"pipeline{r['iid']}"),
)
def test_pipeline_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.pipeline(REF, raw)

    check_field(record, name, expected_pipeline(raw)[name])


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(read("pipeline_details"), "deployments", lambda r: f"detail{r['iid']}"),
)
def test_pipeline_detail_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.pipeline(REF, raw)

    check_field(record, name, expected_pipeline(raw)[name])


@pytest.mark.parametrize(
    ("raw", "name"),
    field_cases(read("deployments"), "deployments", lambda r: f"deployment{r['iid']}"),
)
def test_deployment_field(raw: dict[str, Any], name: str) -> None:
    record = mapping.deployment(REF, raw)

    check_field(record, name, expected_deployment(raw)[name])


# -- the fixtures cover what the tables promise --------------------------------------


def test_fixture_pipeline_statuses_known() -> None:
    raw_statuses = {
        raw["status"] for raw in read("pipelines") + read("pipeline_details")
    }

    assert raw_statuses <= set(PIPELINE_STATUSES)
    assert len(raw_statuses) >= 10


def test_fixture_deployment_statuses_known() -> None:
    raw_statuses = {raw["status"] for raw in read("deployments")}

    assert raw_statuses <= set(DEPLOYMENT_STATUS_MAP)
    assert len(raw_statuses) == 8


def test_status_tables_within_contract() -> None:
    assert set(PIPELINE_STATUSES.values()) <= DEPLOYMENT_STATUSES
    assert set(DEPLOYMENT_STATUS_MAP.values()) <= DEPLOYMENT_STATUSES


def test_fixture_note_types_covered() -> None:
    types = {mapping.note_type(raw) for raw in read("merge_request_notes")}

    assert types == {
        "comment",
        "commit_pushed",
        "ready_for_review",
        "merged",
        "approved",
        "unapproved",
        "other",
    }


def test_fixture_merge_request_states() -> None:
    states = {
        mapping.merge_request(REF, raw).payload["state"] for raw in merge_requests()
    }

    assert states == {"open", "merged", "closed"}


def test_fixture_drafts_mapped() -> None:
    drafts = [
        raw["iid"]
        for raw in merge_requests()
        if mapping.merge_request(REF, raw).payload["draft"]
    ]

    assert len(drafts) >= 2
    assert all(raw["draft"] for raw in merge_requests() if raw["iid"] in drafts)


# -- system notes and comments -------------------------------------------------------


def note(body: str | None, *, system: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "id": 501,
        "type": None,
        "body": body,
        "author": {"id": 90000001},
        "created_at": "2024-05-01T10:00:00.000Z",
        "system": system,
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("approved this merge request", "approved", id="approved"),
        pytest.param("unapproved this merge request", "unapproved", id="unapproved"),
        pytest.param("requested changes", "changes_requested", id="changes"),
        pytest.param("merged", "merged", id="merged"),
        pytest.param("closed", "closed", id="closed"),
        pytest.param("reopened", "reopened", id="reopened"),
        pytest.param(
            "unmarked as a **Work In Progress**", "ready_for_review", id="unmarked-wip"
        ),
        pytest.param(
            "marked this merge request as **ready**", "ready_for_review", id="ready"
        ),
        pytest.param(
            "requested review from @user-01", "review_requested", id="review-one"
        ),
        pytest.param(
            "requested review from @user-01 and @user-02",
            "review_requested",
            id="review-two",
        ),
        pytest.param(
            "added 1 commit\n\n<ul><li>abbe0ab2 - add first bit</li></ul>",
            "commit_pushed",
            id="one-commit",
        ),
        pytest.param(
            "added 12 commits\n\n<ul><li>abbe0ab2...91e5666b - 12 commits</li></ul>",
            "commit_pushed",
            id="many-commits",
        ),
        pytest.param("marked as a **Work In Progress**", "other", id="marked-wip"),
        pytest.param("marked this merge request as **draft**", "other", id="draft"),
        pytest.param("removed review request for @user-01", "other", id="unrequest"),
        pytest.param("assigned to @user-02", "other", id="assigned"),
        pytest.param("mentioned in commit da1d6dea", "other", id="mentioned"),
        pytest.param("mentioned in merge request !5", "other", id="mentioned-mr"),
        pytest.param("changed the description", "other", id="description"),
        pytest.param("restored source branch `4-config`", "other", id="restored"),
        pytest.param("", "other", id="empty"),
        pytest.param(None, "other", id="none"),
    ],
)
def test_system_note_type(body: str | None, expected: str) -> None:
    record = mapping.note_event(REF, MR_ID, note(body))

    assert record.payload["type"] == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"type": "DiffNote"}, "review_comment", id="diff-note"),
        pytest.param({"type": "DiscussionNote"}, "comment", id="discussion-note"),
        pytest.param({"type": None}, "comment", id="plain"),
        pytest.param(
            {"position": {"new_path": "README.md", "new_line": 3}},
            "review_comment",
            id="position",
        ),
        pytest.param(
            {"body": "approved this merge request"}, "comment", id="wording-of-system"
        ),
    ],
)
def test_user_note_type(extra: dict[str, Any], expected: str) -> None:
    raw = {**note("LGTM", system=False), **extra}

    record = mapping.note_event(REF, MR_ID, raw)

    assert record.payload["type"] == expected


def test_note_types_within_contract() -> None:
    assert {
        mapping.note_type(raw) for raw in read("merge_request_notes")
    } <= EVENT_TYPES


def test_approval_event() -> None:
    approver = {"user": {"id": 90000003}, "approved_at": "2024-05-01T12:00:00+02:00"}

    record = mapping.approval_event(REF, MR_ID, approver)

    assert record is not None
    assert record.payload["type"] == "approved"
    assert record.payload["actor_id"] == "90000003"
    assert record.payload["pull_request_id"] == MR_ID
    assert datetime.fromisoformat(record.payload["created_at"]) == datetime(
        2024, 5, 1, 10, tzinfo=UTC
    )


def test_approval_without_time() -> None:
    record = mapping.approval_event(REF, MR_ID, {"user": {"id": 90000003}})

    assert record is not None
    assert record.payload["created_at"] is None


def test_approval_without_user() -> None:
    assert mapping.approval_event(REF, MR_ID, {"user": None}) is None


# -- nothing outside the contract ----------------------------------------------------


def all_records() -> list[Record]:
    records = [mapping.merge_request(REF, raw) for raw in merge_requests()]
    records += [
        mapping.note_event(REF, str(raw["noteable_id"]), raw)
        for raw in read("merge_request_notes")
    ]
    records += [
        mapping.commit(REF, MR_ID, raw) for raw in read("merge_request_commits")
    ]
    records += [
        mapping.pipeline(REF, raw)
        for raw in read("pipelines") + read("pipeline_details")
    ]
    records += [mapping.deployment(REF, raw) for raw in read("deployments")]
    people = read("users") + read("users_direct_api")
    for raw in merge_requests():
        people += mapping.merge_request_users(raw)
    records += [r for r in map(mapping.user, people) if r is not None]
    return records


def test_records_have_contract_keys() -> None:
    for record in all_records():
        assert set(record.payload) == {"provider", *FIELDS[record.entity]}, record.key


def test_records_have_no_email() -> None:
    for record in all_records():
        assert not EMAIL.search(record.canonical_json()), record.key


def test_records_have_no_descriptions() -> None:
    texts = [raw["description"] for raw in merge_requests()]
    texts += [raw["body"] for raw in read("merge_request_notes") if not raw["system"]]
    long_texts = [text for text in texts if text and len(text) > 20]
    sent = "\n".join(record.canonical_json() for record in all_records())

    assert len(long_texts) > 5
    for text in long_texts:
        assert json.dumps(text, ensure_ascii=False)[1:-1] not in sent


def test_users_keep_three_fields() -> None:
    for raw in read("users_direct_api"):
        record = mapping.user(raw)

        assert record is not None
        assert set(record.payload) == {"provider", "id", "username", "name"}
        assert record.payload["id"] == str(raw["id"])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="none"),
        pytest.param("user-01", id="text"),
        pytest.param({"username": "user-01"}, id="no-id"),
        pytest.param({"id": True}, id="bool-id"),
    ],
)
def test_user_without_id(raw: Any) -> None:
    assert mapping.user(raw) is None


def test_commit_multiline_message() -> None:
    raw = {
        "id": "ad25fcda15e310a7eb34b3e38ff9b962b54f0e03",
        "message": "Fix the parser\n\nThe body explains why.\nSigned-off-by: A <a@b.c>",
        "author_name": "User 02",
        "author_email": "user02@example.com",
        "authored_date": "2019-06-28T13:03:52.000+02:00",
        "committed_date": "2019-06-28T11:03:52.000Z",
    }

    record = mapping.commit(REF, MR_ID, raw)

    assert record.payload["title"] == "Fix the parser"
    assert "a@b.c" not in record.canonical_json()
    assert record.payload["authored_at"] == record.payload["committed_at"]


# -- timestamps with offsets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_time", "expected"),
    [
        pytest.param(
            "2024-03-01T05:00:00.000+08:00",
            datetime(2024, 2, 29, 21, tzinfo=UTC),
            id="plus-8",
        ),
        pytest.param(
            "2024-03-01T20:30:00-05:00",
            datetime(2024, 3, 2, 1, 30, tzinfo=UTC),
            id="minus-5",
        ),
        pytest.param(
            "2024-03-01T05:00:00.123Z",
            datetime(2024, 3, 1, 5, 0, 0, 123000, tzinfo=UTC),
            id="z",
        ),
    ],
)
def test_merge_request_offset_times(raw_time: str, expected: datetime) -> None:
    raw = {**merge_requests()[0], "created_at": raw_time, "updated_at": raw_time}

    payload = mapping.merge_request(REF, raw).payload

    assert UTC_Z.fullmatch(payload["created_at"])
    assert datetime.fromisoformat(payload["created_at"]) == expected
    assert datetime.fromisoformat(payload["updated_at"]) == expected


def test_deployment_offset_times() -> None:
    raw = copy.deepcopy(read("deployments")[0])
    raw["created_at"] = "2023-11-07T15:45:15+08:00"
    raw["deployable"]["finished_at"] = "2023-11-07T23:59:59.999-01:00"

    payload = mapping.deployment(REF, raw).payload

    assert payload["created_at"].endswith("Z")
    assert datetime.fromisoformat(payload["created_at"]) == datetime(
        2023, 11, 7, 7, 45, 15, tzinfo=UTC
    )
    assert datetime.fromisoformat(payload["finished_at"]) == datetime(
        2023, 11, 8, 0, 59, 59, 999000, tzinfo=UTC
    )


# -- merge request details the fixtures lack -----------------------------------------


def test_merge_request_with_stats() -> None:
    raw = {
        **merge_requests()[0],
        "state": "locked",
        "merge_user": None,
        "merged_by": {"id": 90000005},
        "reviewers": [{"id": 90000007}, {"id": 90000008}],
        "changes_count": "7",
        "additions": 30,
        "deletions": 4,
    }

    payload = mapping.merge_request(REF, raw).payload

    assert payload["state"] == "open"
    assert payload["merged_by_id"] == "90000005"
    assert payload["reviewer_ids"] == ["90000007", "90000008"]
    assert payload["changed_files"] == 7
    assert payload["additions"] == 30
    assert payload["deletions"] == 4


def test_merge_request_work_in_progress_only() -> None:
    raw = {**merge_requests()[0]}
    del raw["draft"]
    raw["work_in_progress"] = True

    assert mapping.merge_request(REF, raw).payload["draft"] is True


def test_merge_user_preferred() -> None:
    raw = {
        **merge_requests()[0],
        "merge_user": {"id": 90000011},
        "merged_by": {"id": 90000012},
    }

    assert mapping.merge_request(REF, raw).payload["merged_by_id"] == "90000011"


# -- missing values stay None --------------------------------------------------------

UNKNOWN_WITHOUT_INPUT = [
    name for name in FIELDS["pull_requests"] if name not in ("id", "repository_id")
]


@pytest.mark.parametrize(
    "name",
    [name for name in UNKNOWN_WITHOUT_INPUT],
)
def test_merge_request_missing_is_none(name: str) -> None:
    payload = mapping.merge_request(REF, {"id": 1}).payload

    assert payload[name] is None


@pytest.mark.parametrize(
    ("build", "entity", "kept"),
    [
        pytest.param(
            lambda raw: mapping.commit(REF, MR_ID, raw),
            "pull_request_commits",
            {"id", "pull_request_id"},
            id="commit",
        ),
        pytest.param(
            lambda raw: mapping.note_event(REF, MR_ID, raw),
            "pull_request_events",
            {"id", "pull_request_id", "type"},
            id="note",
        ),
        pytest.param(
            lambda raw: mapping.pipeline(REF, raw),
            "deployments",
            {"id", "repository_id", "source", "status"},
            id="pipeline",
        ),
        pytest.param(
            lambda raw: mapping.deployment(REF, raw),
            "deployments",
            {"id", "repository_id", "source", "status"},
            id="deployment",
        ),
    ],
)
def test_missing_is_none(build: Any, entity: str, kept: set[str]) -> None:
    payload = build({"id": 1}).payload

    for name in FIELDS[entity]:
        if name not in kept:
            assert payload[name] is None, name


def test_missing_status_is_other() -> None:
    assert mapping.pipeline(REF, {"id": 1}).payload["status"] == "other"
    assert mapping.deployment(REF, {"id": 1}).payload["status"] == "other"


# -- bad input maps to None or raises ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        pytest.param("iid", "abc", "number", id="iid-text"),
        pytest.param("iid", None, "number", id="iid-none"),
        pytest.param("state", "weird", "state", id="state-unknown"),
        pytest.param("state", 5, "state", id="state-number"),
        pytest.param("state", None, "state", id="state-none"),
        pytest.param("author", "user-01", "author_id", id="author-text"),
        pytest.param("author", {"id": None}, "author_id", id="author-no-id"),
        pytest.param("author", {"id": True}, "author_id", id="author-bool-id"),
        pytest.param("author", [90000001], "author_id", id="author-list"),
        pytest.param("merged_at", None, "merged_at", id="merged-at-none"),
        pytest.param("merged_at", "", "merged_at", id="merged-at-empty"),
        pytest.param("changes_count", "many", "changed_files", id="changes-text"),
        pytest.param("additions", "2.5", "additions", id="additions-fraction"),
        pytest.param("sha", None, "head_sha", id="sha-none"),
    ],
)
def test_merge_request_bad_field_none(field: str, value: Any, name: str) -> None:
    raw = {**merge_requests()[0], field: value}

    assert mapping.merge_request(REF, raw).payload[name] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("id", None, id="id-none"),
        pytest.param("id", "", id="id-empty"),
        pytest.param("title", {"text": "x"}, id="title-object"),
        pytest.param("web_url", ["https://gitlab.com/x"], id="web-url-list"),
        pytest.param("created_at", 1561699303, id="created-number"),
        pytest.param("created_at", "yesterday", id="created-text"),
        pytest.param("updated_at", "2024-02-30T00:00:00Z", id="updated-no-such-day"),
        pytest.param("merged_at", ["2019-06-28"], id="merged-list"),
    ],
)
def test_merge_request_bad_field_raises(field: str, value: Any) -> None:
    raw = {**merge_requests()[0], field: value}

    with pytest.raises((ValueError, TypeError)):
        mapping.merge_request(REF, raw)


def test_merge_request_reviewers_mixed() -> None:
    raw = {
        **merge_requests()[0],
        "reviewers": [None, "user-07", {"id": 90000007}, {"name": "no id"}],
    }

    assert mapping.merge_request(REF, raw).payload["reviewer_ids"] == ["90000007"]


def test_merge_request_draft_text() -> None:
    raw = {**merge_requests()[0], "draft": "false", "work_in_progress": "false"}

    assert mapping.merge_request(REF, raw).payload["draft"] is None


@pytest.mark.parametrize(
    "title",
    [
        pytest.param("Fix \u202eemordnilap\u202c 🐛", id="bidi-emoji"),
        pytest.param("ZWNJ at the end\u200c", id="zero-width"),
        pytest.param("NUL \x00 inside", id="nul"),
        pytest.param("Ünïcödé 中文 title", id="accents-cjk"),
    ],
)
def test_merge_request_unicode_title(title: str) -> None:
    raw = {**merge_requests()[0], "title": title}

    record = mapping.merge_request(REF, raw)

    assert record.payload["title"] == title
    assert len(record.content_hash()) == 32


def test_merge_request_lone_surrogate() -> None:
    raw = {**merge_requests()[0], "title": "Fix \ud83d"}

    with pytest.raises(ValueError):
        mapping.merge_request(REF, raw)


@pytest.mark.parametrize(
    ("build", "raw"),
    [
        pytest.param(
            lambda raw: mapping.note_event(REF, MR_ID, raw),
            note("merged", created_at="soon"),
            id="note-created-text",
        ),
        pytest.param(
            lambda raw: mapping.note_event(REF, MR_ID, raw),
            note("merged", id=None),
            id="note-no-id",
        ),
        pytest.param(
            lambda raw: mapping.commit(REF, MR_ID, raw),
            {"id": "abc123", "authored_date": 5},
            id="commit-authored-number",
        ),
        pytest.param(
            lambda raw: mapping.pipeline(REF, raw),
            {"id": 7, "created_at": "2024-13-01T00:00:00Z"},
            id="pipeline-month-13",
        ),
        pytest.param(
            lambda raw: mapping.deployment(REF, raw),
            {"id": 7, "deployable": {"started_at": 5}},
            id="deployment-started-number",
        ),
        pytest.param(
            lambda raw: mapping.deployment(REF, raw),
            {"id": 7, "ref": {"name": "main"}},
            id="deployment-ref-object",
        ),
    ],
)
def test_bad_child_raises(build: Any, raw: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build(raw)


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        pytest.param("environment", "production", "environment", id="environment-text"),
        pytest.param("environment", None, "environment", id="environment-none"),
        pytest.param("deployable", None, "started_at", id="no-job-started"),
        pytest.param("deployable", None, "finished_at", id="no-job-finished"),
        pytest.param("deployable", None, "web_url", id="no-job-url"),
        pytest.param("deployable", "job", "web_url", id="job-text"),
    ],
)
def test_deployment_bad_field_none(field: str, value: Any, name: str) -> None:
    raw = {**read("deployments")[0], field: value}

    assert mapping.deployment(REF, raw).payload[name] is None


def test_note_author_missing() -> None:
    record = mapping.note_event(REF, MR_ID, note("merged", author=None))

    assert record.payload["actor_id"] is None


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda raw: mapping.merge_request(REF, raw), id="merge-request"),
        pytest.param(lambda raw: mapping.note_event(REF, MR_ID, raw), id="note"),
        pytest.param(lambda raw: mapping.commit(REF, MR_ID, raw), id="commit"),
        pytest.param(lambda raw: mapping.pipeline(REF, raw), id="pipeline"),
        pytest.param(lambda raw: mapping.deployment(REF, raw), id="deployment"),
    ],
)
@pytest.mark.parametrize("raw", [None, [], "text"], ids=["none", "list", "text"])
def test_non_object_raises(build: Any, raw: Any) -> None:
    # The provider catches AttributeError next to ValueError and TypeError and
    # reports the object as a failure.
    with pytest.raises((AttributeError, TypeError, ValueError)):
        build(raw)
