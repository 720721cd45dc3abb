"""The records MHQ receives: their fields, normalization and content hash.

Provider modules map raw API objects through ``make_record``, which keeps exactly the
fields listed here, so nothing else (descriptions, note bodies, diffs, emails) can
leave by accident.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FIELDS: dict[str, tuple[str, ...]] = {
    "repositories": (
        "id",
        "key",
        "name",
        "namespace",
        "web_url",
        "default_branch",
    ),
    "users": ("id", "username", "name"),
    "pull_requests": (
        "id",
        "repository_id",
        "number",
        "title",
        "state",
        "draft",
        "author_id",
        "created_at",
        "updated_at",
        "merged_at",
        "closed_at",
        "merged_by_id",
        "source_branch",
        "target_branch",
        "head_sha",
        "merge_commit_sha",
        "squash_commit_sha",
        "additions",
        "deletions",
        "changed_files",
        "reviewer_ids",
        "web_url",
    ),
    "pull_request_events": ("id", "pull_request_id", "type", "actor_id", "created_at"),
    "pull_request_commits": (
        "id",
        "pull_request_id",
        "author_name",
        "author_id",
        "authored_at",
        "committed_at",
        "title",
    ),
    "deployments": (
        "id",
        "repository_id",
        "source",
        "environment",
        "status",
        "ref",
        "sha",
        "created_at",
        "started_at",
        "finished_at",
        "web_url",
    ),
    "deletions": ("id", "entity"),
}

ENTITIES = tuple(FIELDS)

EVENT_TYPES = frozenset(
    {
        "comment",
        "review_comment",
        "approved",
        "unapproved",
        "changes_requested",
        "review_requested",
        "ready_for_review",
        "merged",
        "closed",
        "reopened",
        "commit_pushed",
        "other",
    }
)
DEPLOYMENT_STATUSES = frozenset(
    {"success", "failed", "canceled", "running", "pending", "skipped", "other"}
)


@dataclass(frozen=True)
class Record:
    """One record as stored and sent; ``key`` is unique per provider and entity."""

    entity: str
    payload: dict[str, Any]
    key: str
    repository_key: str | None = None
    parent_id: str | None = None

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    def canonical_json(self) -> str:
        return json.dumps(
            self.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    def content_hash(self) -> bytes:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).digest()


def make_record(
    entity: str,
    provider: str,
    fields: dict[str, Any],
    *,
    key: str | None = None,
    repository_key: str | None = None,
    parent_id: str | None = None,
) -> Record:
    """Build a record holding exactly the contract's fields for ``entity``.

    Raises ValueError when a field outside the list is given or the id is missing,
    so a mapping mistake fails in tests instead of leaking data.
    """
    allowed = FIELDS[entity]
    extra = set(fields) - set(allowed)
    if extra:
        raise ValueError(f"{entity} record has fields outside the contract: {extra}")
    if fields.get("id") in (None, ""):
        raise ValueError(f"{entity} record has no id")
    payload: dict[str, Any] = {"provider": provider}
    for name in allowed:
        payload[name] = fields.get(name)
    payload["id"] = str(payload["id"])
    text = json.dumps(payload, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{entity} record {payload['id']} contains text that is not valid Unicode "
            f"(at character {exc.start})"
        ) from None
    return Record(
        entity,
        payload,
        key or payload["id"],
        repository_key=repository_key,
        parent_id=parent_id,
    )


def utc_timestamp(value: Any) -> str | None:
    """Normalize an ISO 8601 timestamp to RFC 3339 UTC with a ``Z``; None stays None.

    Raises ValueError for text that is not a timestamp, so the caller can report the
    record instead of sending an invented value.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not a string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        # NOTE: providers send offsets; a naive value is taken as UTC, not local time.
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_or_none(value: Any) -> str | None:
    """Return a provider id as a string, or None when it is missing."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    return str(value)


def first_line(text: Any) -> str | None:
    """Return the first line of a commit message (its title), or None."""
    if not isinstance(text, str):
        return None
    return text.strip().split("\n", 1)[0].strip() or None


def text_or_none(value: Any) -> str | None:
    """Return a provider value as text; numbers become text, None stays None.

    Raises ValueError for other types, so the caller reports the record instead of
    sending a Python representation.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected text, got {type(value).__name__}")


def as_dict(value: Any) -> dict[str, Any]:
    """Return ``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """Return ``value`` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []
