"""GitLab API objects to the contract's records.

Only the contract's fields are read out; descriptions, note bodies, diffs and email
addresses are never copied. System notes become typed events by their fixed wording
(GitLab writes them in English whatever the user's language).
"""

from __future__ import annotations

import re
from typing import Any

from agent.processing.records import (
    Record,
    first_line,
    id_or_none,
    make_record,
    utc_timestamp,
)
from agent.processing.records import (
    as_dict as _dict,
)
from agent.processing.records import (
    as_list as _list,
)
from agent.processing.records import (
    text_or_none as _text,
)
from agent.providers.base import RepositoryRef

PROVIDER = "gitlab"

_STATES = {"opened": "open", "locked": "open", "merged": "merged", "closed": "closed"}

# System note wording, matched from the start of the body. Order matters: the
# first match wins ("unapproved" before "approved").
_SYSTEM_NOTE_TYPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"^unapproved this merge request", "unapproved"),
        (r"^approved this merge request", "approved"),
        (r"^requested changes", "changes_requested"),
        (r"^merged\b", "merged"),
        (r"^closed\b", "closed"),
        (r"^reopened\b", "reopened"),
        (r"^marked this merge request as \*\*ready\*\*", "ready_for_review"),
        (r"^marked as ready", "ready_for_review"),
        (r"^unmarked as a \*\*work in progress\*\*", "ready_for_review"),
        (r"^(requested review from|requested a review from)", "review_requested"),
        (r"^added \d+ (new )?commits?\b", "commit_pushed"),
    )
)

_PIPELINE_STATUSES = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "canceling": "canceled",
    "running": "running",
    "pending": "pending",
    "created": "pending",
    "waiting_for_resource": "pending",
    "preparing": "pending",
    "scheduled": "pending",
    "waiting_for_callback": "pending",
    "skipped": "skipped",
}

_DEPLOYMENT_STATUSES = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "running": "running",
    "created": "pending",
    "blocked": "pending",
    "skipped": "skipped",
}


def repository(ref: RepositoryRef, project: dict[str, Any]) -> Record:
    namespace = _dict(project.get("namespace"))
    return make_record(
        "repositories",
        PROVIDER,
        {
            "id": project.get("id"),
            "key": ref.key,
            "name": project.get("path") or project.get("name"),
            "namespace": namespace.get("full_path")
            if isinstance(namespace, dict)
            else None,
            "web_url": project.get("web_url"),
            "default_branch": project.get("default_branch"),
        },
        repository_key=ref.key,
    )


def user(raw: Any) -> Record | None:
    if not isinstance(raw, dict) or id_or_none(raw.get("id")) is None:
        return None
    return make_record(
        "users",
        PROVIDER,
        {"id": raw["id"], "username": raw.get("username"), "name": raw.get("name")},
    )


def user_id(raw: Any) -> str | None:
    return id_or_none(raw.get("id")) if isinstance(raw, dict) else None


def merge_request(ref: RepositoryRef, mr: dict[str, Any]) -> Record:
    reviewers = mr.get("reviewers")
    return make_record(
        "pull_requests",
        PROVIDER,
        {
            "id": mr.get("id"),
            "repository_id": ref.api_id,
            "number": _int_or_none(mr.get("iid")),
            "title": _text(mr.get("title")),
            "state": _STATES.get(str(mr.get("state"))),
            "draft": _draft(mr),
            "author_id": user_id(mr.get("author")),
            "created_at": utc_timestamp(mr.get("created_at")),
            "updated_at": utc_timestamp(mr.get("updated_at")),
            "merged_at": utc_timestamp(mr.get("merged_at")),
            "closed_at": utc_timestamp(mr.get("closed_at")),
            "merged_by_id": user_id(mr.get("merge_user") or mr.get("merged_by")),
            "source_branch": _text(mr.get("source_branch")),
            "target_branch": _text(mr.get("target_branch")),
            "head_sha": _text(mr.get("sha")),
            "merge_commit_sha": _text(mr.get("merge_commit_sha")),
            "squash_commit_sha": _text(mr.get("squash_commit_sha")),
            "additions": _int_or_none(mr.get("additions")),
            "deletions": _int_or_none(mr.get("deletions")),
            "changed_files": _int_or_none(mr.get("changes_count")),
            # GitLab before 13.7 sends no reviewers: unknown, not an empty list.
            "reviewer_ids": [i for i in map(user_id, reviewers) if i]
            if isinstance(reviewers, list)
            else None,
            "web_url": _text(mr.get("web_url")),
        },
        repository_key=ref.key,
    )


def merge_request_users(mr: dict[str, Any]) -> list[Any]:
    """Return the raw users a merge request record refers to."""
    people = [mr.get("author"), mr.get("merge_user") or mr.get("merged_by")]
    people.extend(_list(mr.get("reviewers")))
    return people


def note_event(ref: RepositoryRef, mr_id: str, note: dict[str, Any]) -> Record:
    return make_record(
        "pull_request_events",
        PROVIDER,
        {
            "id": note.get("id"),
            "pull_request_id": mr_id,
            "type": note_type(note),
            "actor_id": user_id(note.get("author")),
            "created_at": utc_timestamp(note.get("created_at")),
        },
        key=f"note:{note.get('id')}",
        repository_key=ref.key,
        parent_id=mr_id,
    )


def note_type(note: dict[str, Any]) -> str:
    if not note.get("system"):
        is_diff = note.get("type") == "DiffNote" or bool(note.get("position"))
        return "review_comment" if is_diff else "comment"
    body = note.get("body")
    if not isinstance(body, str):
        return "other"
    for pattern, kind in _SYSTEM_NOTE_TYPES:
        if pattern.search(body.strip()):
            return kind
    return "other"


def approval_event(
    ref: RepositoryRef, mr_id: str, approver: dict[str, Any]
) -> Record | None:
    """Map one entry of ``approved_by``; GitLab gives no time on older versions."""
    actor = user_id(approver.get("user"))
    if actor is None:
        return None
    return make_record(
        "pull_request_events",
        PROVIDER,
        {
            "id": f"approval-{mr_id}-{actor}",
            "pull_request_id": mr_id,
            "type": "approved",
            "actor_id": actor,
            "created_at": utc_timestamp(approver.get("approved_at")),
        },
        key=f"approval:{mr_id}:{actor}",
        repository_key=ref.key,
        parent_id=mr_id,
    )


def commit(ref: RepositoryRef, mr_id: str, raw: dict[str, Any]) -> Record:
    sha = raw.get("id")
    return make_record(
        "pull_request_commits",
        PROVIDER,
        {
            "id": sha,
            "pull_request_id": mr_id,
            "author_name": _text(raw.get("author_name")),
            # GitLab's commit API links no account to a commit, only a name and email.
            "author_id": None,
            "authored_at": utc_timestamp(raw.get("authored_date")),
            "committed_at": utc_timestamp(raw.get("committed_date")),
            "title": first_line(raw.get("title") or raw.get("message")),
        },
        key=f"{mr_id}/{sha}",
        repository_key=ref.key,
        parent_id=mr_id,
    )


def pipeline(ref: RepositoryRef, raw: dict[str, Any]) -> Record:
    return make_record(
        "deployments",
        PROVIDER,
        {
            "id": raw.get("id"),
            "repository_id": ref.api_id,
            "source": "pipeline",
            "environment": None,
            "status": _PIPELINE_STATUSES.get(str(raw.get("status")), "other"),
            "ref": _text(raw.get("ref")),
            "sha": _text(raw.get("sha")),
            "created_at": utc_timestamp(raw.get("created_at")),
            "started_at": utc_timestamp(raw.get("started_at")),
            "finished_at": utc_timestamp(raw.get("finished_at")),
            "web_url": _text(raw.get("web_url")),
        },
        key=f"pipeline:{raw.get('id')}",
        repository_key=ref.key,
    )


def deployment(ref: RepositoryRef, raw: dict[str, Any]) -> Record:
    job = _dict(raw.get("deployable"))
    environment = _dict(raw.get("environment"))
    return make_record(
        "deployments",
        PROVIDER,
        {
            "id": raw.get("id"),
            "repository_id": ref.api_id,
            "source": "deployment",
            "environment": _text(environment.get("name")),
            "status": _DEPLOYMENT_STATUSES.get(str(raw.get("status")), "other"),
            "ref": _text(raw.get("ref")),
            "sha": _text(raw.get("sha")),
            "created_at": utc_timestamp(raw.get("created_at")),
            "started_at": utc_timestamp(job.get("started_at")),
            "finished_at": utc_timestamp(job.get("finished_at")),
            "web_url": _text(job.get("web_url")),
        },
        key=f"deployment:{raw.get('id')}",
        repository_key=ref.key,
    )


def version_of(raw: Any) -> str | None:
    """Return the object's version marker: updated_at, else created_at, in UTC.

    A value that is not a timestamp gives None, so the object counts as changed and
    its mapping reports the bad field with the record's id.
    """
    if not isinstance(raw, dict):
        return None
    try:
        return utc_timestamp(raw.get("updated_at") or raw.get("created_at"))
    except (ValueError, TypeError):
        return None


def _draft(mr: dict[str, Any]) -> bool | None:
    """Return ``draft``, else the older ``work_in_progress``, if either is a bool."""
    for name in ("draft", "work_in_progress"):
        if isinstance(mr.get(name), bool):
            return bool(mr[name])
    return None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(str(value).rstrip("+"))
    except ValueError:
        return None
