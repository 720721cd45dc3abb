"""Bitbucket Cloud API objects to the contract's records.

Pull request numbers are unique only within a repository, so a pull request's id is
``<repository uuid>:<number>``. People are identified by ``account_id`` (the same in
every workspace), else by ``uuid``. Descriptions, comment bodies, file paths and the
email part of a commit author are never copied.
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
    as_dict as as_dict,
)
from agent.processing.records import (
    as_list as as_list,
)
from agent.processing.records import (
    text_or_none as _text,
)
from agent.providers.base import RepositoryRef

PROVIDER = "bitbucket"

_STATES = {
    "OPEN": "open",
    "MERGED": "merged",
    "DECLINED": "closed",
    "SUPERSEDED": "closed",
}

# Pipeline and deployment outcomes, by result name when completed, else state name.
_STATUSES = {
    "SUCCESSFUL": "success",
    "PASSED": "success",
    "FAILED": "failed",
    "ERROR": "failed",
    "EXPIRED": "failed",
    "STOPPED": "canceled",
    "CANCELLED": "canceled",
    "IN_PROGRESS": "running",
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "pending",
    "HALTED": "pending",
}
_WAITING_STAGES = frozenset({"PAUSED", "HALTED"})
_AUTHOR = re.compile(r"^\s*(?P<name>[^<]*?)\s*(<[^>]*>)?\s*$")


def pull_request_id(repository: RepositoryRef, number: Any) -> str:
    return f"{repository.api_id}:{number}"


def user_id(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    return id_or_none(raw.get("account_id")) or id_or_none(raw.get("uuid"))


def user(raw: Any) -> Record | None:
    identifier = user_id(raw)
    if identifier is None:
        return None
    return make_record(
        "users",
        PROVIDER,
        {
            "id": identifier,
            "username": _text(raw.get("nickname")),
            "name": _text(raw.get("display_name")),
        },
    )


def repository(ref: RepositoryRef, raw: dict[str, Any]) -> Record:
    workspace = as_dict(raw.get("workspace"))
    return make_record(
        "repositories",
        PROVIDER,
        {
            "id": ref.api_id,
            "key": ref.key,
            "name": _text(raw.get("slug")),
            "namespace": _text(workspace.get("slug"))
            or _text(str(raw.get("full_name", "")).split("/")[0] or None),
            "web_url": html_url(raw),
            "default_branch": _text(as_dict(raw.get("mainbranch")).get("name")),
        },
        repository_key=ref.key,
    )


def pull_request(
    ref: RepositoryRef,
    raw: dict[str, Any],
    *,
    merged_at: str | None,
    closed_at: str | None,
) -> Record:
    state = str(raw.get("state"))
    source = as_dict(raw.get("source"))
    destination = as_dict(raw.get("destination"))
    reviewers = raw.get("reviewers")
    return make_record(
        "pull_requests",
        PROVIDER,
        {
            "id": pull_request_id(ref, raw.get("id")),
            "repository_id": ref.api_id,
            "number": _int(raw.get("id")),
            "title": _text(raw.get("title")),
            "state": _STATES.get(state),
            "draft": raw["draft"] if isinstance(raw.get("draft"), bool) else None,
            "author_id": user_id(raw.get("author")),
            "created_at": utc_timestamp(raw.get("created_on")),
            "updated_at": utc_timestamp(raw.get("updated_on")),
            "merged_at": merged_at if state == "MERGED" else None,
            "closed_at": closed_at if state in ("DECLINED", "SUPERSEDED") else None,
            "merged_by_id": user_id(raw.get("closed_by"))
            if state == "MERGED"
            else None,
            "source_branch": _text(as_dict(source.get("branch")).get("name")),
            "target_branch": _text(as_dict(destination.get("branch")).get("name")),
            "head_sha": _text(as_dict(source.get("commit")).get("hash")),
            "merge_commit_sha": _text(as_dict(raw.get("merge_commit")).get("hash")),
            "squash_commit_sha": None,
            "additions": None,
            "deletions": None,
            "changed_files": None,
            "reviewer_ids": [i for i in map(user_id, reviewers) if i]
            if isinstance(reviewers, list)
            else None,
            "web_url": html_url(raw),
        },
        repository_key=ref.key,
    )


def pull_request_users(raw: dict[str, Any]) -> list[Any]:
    people = [raw.get("author"), raw.get("closed_by")]
    people += as_list(raw.get("reviewers"))
    people += [as_dict(p).get("user") for p in as_list(raw.get("participants"))]
    return people


def event(
    ref: RepositoryRef,
    pr_id: str,
    *,
    key: str,
    kind: str,
    actor: Any,
    created_at: Any,
) -> Record:
    return make_record(
        "pull_request_events",
        PROVIDER,
        {
            "id": key,
            "pull_request_id": pr_id,
            "type": kind,
            "actor_id": user_id(actor),
            "created_at": utc_timestamp(created_at),
        },
        key=key,
        repository_key=ref.key,
        parent_id=pr_id,
    )


def activity_event(ref: RepositoryRef, item: dict[str, Any]) -> Record | None:
    """Map one entry of the repository's pull request activity log."""
    pr_id = pull_request_id(ref, as_dict(item.get("pull_request")).get("id"))
    if "comment" in item:
        comment = as_dict(item["comment"])
        if comment.get("deleted") is True or comment.get("id") is None:
            return None
        inline = comment.get("inline")
        kind = "review_comment" if isinstance(inline, dict) else "comment"
        return event(
            ref,
            pr_id,
            key=f"comment:{comment['id']}",
            kind=kind,
            actor=comment.get("user"),
            created_at=comment.get("created_on"),
        )
    if "approval" in item:
        approval = as_dict(item["approval"])
        return event(
            ref,
            pr_id,
            key=approval_key(pr_id, approval.get("user")),
            kind="approved",
            actor=approval.get("user"),
            created_at=approval.get("date"),
        )
    if "changes_requested" in item:
        request = as_dict(item["changes_requested"])
        actor = request.get("user")
        return event(
            ref,
            pr_id,
            key=f"changes_requested:{pr_id}:{user_id(actor)}:{request.get('date')}",
            kind="changes_requested",
            actor=actor,
            created_at=request.get("date"),
        )
    if "update" in item:
        update = as_dict(item["update"])
        kind = {"MERGED": "merged", "DECLINED": "closed", "SUPERSEDED": "closed"}.get(
            str(update.get("state")), "other"
        )
        return event(
            ref,
            pr_id,
            key=f"update:{pr_id}:{update.get('date')}",
            kind=kind,
            actor=update.get("author"),
            created_at=update.get("date"),
        )
    return None


def activity_users(item: dict[str, Any]) -> list[Any]:
    for name, field in (
        ("comment", "user"),
        ("approval", "user"),
        ("changes_requested", "user"),
        ("update", "author"),
    ):
        if name in item:
            return [as_dict(item[name]).get(field)]
    return []


def activity_date(item: dict[str, Any]) -> str | None:
    """Return the time of an activity entry, in UTC, or None when it has none."""
    for name, field in (
        ("comment", "created_on"),
        ("approval", "date"),
        ("changes_requested", "date"),
        ("update", "date"),
    ):
        if name in item:
            try:
                return utc_timestamp(as_dict(item[name]).get(field))
            except (ValueError, TypeError):
                return None
    return None


def unapproval_event(
    ref: RepositoryRef, pr_id: str, actor_id: str | None, observed_on: Any
) -> Record:
    """Map a withdrawn approval; Bitbucket does not say when it was withdrawn."""
    key = f"unapproval:{pr_id}:{actor_id}:{observed_on}"
    return make_record(
        "pull_request_events",
        PROVIDER,
        {
            "id": key,
            "pull_request_id": pr_id,
            "type": "unapproved",
            "actor_id": actor_id,
            "created_at": None,
        },
        key=key,
        repository_key=ref.key,
        parent_id=pr_id,
    )


def approval_key(pr_id: str, actor: Any) -> str:
    return f"approval:{pr_id}:{user_id(actor)}"


def commit(ref: RepositoryRef, pr_id: str, raw: dict[str, Any]) -> Record:
    # An id of another type would otherwise be sent as its Python repr.
    sha = _text(raw.get("hash"))
    author = as_dict(raw.get("author"))
    return make_record(
        "pull_request_commits",
        PROVIDER,
        {
            "id": sha,
            "pull_request_id": pr_id,
            "author_name": author_name(author.get("raw")),
            "author_id": user_id(author.get("user")),
            # Bitbucket gives one commit date: the author date.
            "authored_at": utc_timestamp(raw.get("date")),
            "committed_at": None,
            "title": first_line(raw.get("message")),
        },
        key=f"{pr_id}/{sha}",
        repository_key=ref.key,
        parent_id=pr_id,
    )


def author_name(raw: Any) -> str | None:
    """Return the name part of ``Name <email>``; never an email address."""
    if not isinstance(raw, str):
        return None
    match = _AUTHOR.match(raw)
    name = match.group("name") if match else ""
    return name if name and "@" not in name else None


def pipeline(ref: RepositoryRef, raw: dict[str, Any]) -> Record:
    target = as_dict(raw.get("target"))
    # A build number of another type would otherwise end up in the link as text.
    build = _int(raw.get("build_number"))
    repository_url = ref.web_url
    return make_record(
        "deployments",
        PROVIDER,
        {
            "id": _text(raw.get("uuid")),
            "repository_id": ref.api_id,
            "source": "pipeline",
            "environment": None,
            "status": status(raw.get("state")),
            "ref": _text(target.get("ref_name")),
            "sha": _text(as_dict(target.get("commit")).get("hash")),
            "created_at": utc_timestamp(raw.get("created_on")),
            "started_at": None,
            "finished_at": utc_timestamp(raw.get("completed_on")),
            "web_url": f"{repository_url}/pipelines/results/{build}"
            if build is not None and repository_url
            else None,
        },
        key=f"pipeline:{raw.get('uuid')}",
        repository_key=ref.key,
    )


def deployment(ref: RepositoryRef, raw: dict[str, Any]) -> Record:
    state = as_dict(raw.get("state"))
    release = as_dict(raw.get("release"))
    return make_record(
        "deployments",
        PROVIDER,
        {
            "id": _text(raw.get("uuid")),
            "repository_id": ref.api_id,
            "source": "deployment",
            "environment": _text(as_dict(raw.get("environment")).get("name")),
            "status": status(state),
            "ref": None,
            "sha": _text(as_dict(release.get("commit")).get("hash")),
            "created_at": utc_timestamp(state.get("started_on")),
            "started_at": utc_timestamp(state.get("started_on")),
            "finished_at": utc_timestamp(state.get("completed_on")),
            "web_url": _text(state.get("url")) or _text(release.get("url")),
        },
        key=f"deployment:{raw.get('uuid')}",
        repository_key=ref.key,
    )


def status(state: Any) -> str:
    """Map a pipeline or deployment state to the contract's statuses."""
    state = as_dict(state)
    name = str(state.get("name"))
    if name == "COMPLETED":
        outcome = as_dict(state.get("result")) or as_dict(state.get("status"))
        return _STATUSES.get(str(outcome.get("name")), "other")
    if (
        name == "IN_PROGRESS"
        and as_dict(state.get("stage")).get("name") in _WAITING_STAGES
    ):
        return "pending"
    return _STATUSES.get(name, "other")


def is_finished(raw: dict[str, Any]) -> bool:
    return status(raw.get("state")) not in ("running", "pending")


def html_url(raw: dict[str, Any]) -> str | None:
    return _text(as_dict(as_dict(raw.get("links")).get("html")).get("href"))


def version_of(raw: Any, field: str) -> str | None:
    if not isinstance(raw, dict):
        return None
    try:
        return utc_timestamp(raw.get(field))
    except (ValueError, TypeError):
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
