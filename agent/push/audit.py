"""Inspecting what leaves the agent: what was sent, and what would be.

The audit log has a row for every request that carried a message to MHQ, written
before the request is sent and completed with MHQ's response. Every attempt
encrypts anew, with a fresh content key and IV, so each has its own ciphertext and
the SHA-256 of a body MHQ received matches exactly one row. The plaintext hash is
the same for every attempt of a batch.

The preview prints the records the next push would send, and the pseudonym
lookup what a pseudonym seen at MHQ stands for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import StoreError
from agent.logs import mask
from agent.processing.privacy import (
    BRANCHES,
    PEOPLE,
    REPOSITORIES,
    TITLES,
    PolicySettings,
)
from agent.store.db import Database
from agent.store.outbox import Outbox

log = logging.getLogger(__name__)

COLUMNS = (
    "id",
    "message_id",
    "type",
    "sent_at",
    "provider",
    "record_count",
    "counts",
    "plaintext_sha256",
    "ciphertext_sha256",
    "body_bytes",
    "status",
    "error",
    "finished_at",
)


@dataclass(frozen=True)
class MessageInfo:
    """Details of a message that the audit log records besides its bytes."""

    type: str
    provider: str | None = None
    record_count: int | None = None
    counts: dict[str, int] | None = None


@dataclass(frozen=True)
class AuditFilter:
    """Conditions ``mhq-agent audit`` selects rows by; None matches everything.

    ``status`` is an HTTP status, or 0 for attempts that got no response.
    """

    type: str | None = None
    since: datetime | None = None
    status: int | None = None
    message_id: str | None = None
    limit: int = 1000


class AuditLog:
    """Writes audit rows. With ``required``, a failed write stops the message.

    Batches require their row, so nothing leaves without a trace; heartbeats do
    not, because they must still report a database that fails.
    """

    def __init__(self, db: Database, *, required: bool = True) -> None:
        self.db = db
        self.required = required

    def start(
        self,
        message_id: str,
        url: str,
        plaintext: bytes,
        body: bytes,
        info: MessageInfo,
    ) -> int | None:
        """Note an attempt about to be sent; return its row id."""
        try:
            rows = self.db.fetch_all(
                "INSERT INTO audit_log (message_id, type, url, provider, record_count, "
                "counts, plaintext_sha256, ciphertext_sha256, body_bytes) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    message_id,
                    info.type,
                    mask(url),
                    info.provider,
                    info.record_count,
                    json.dumps(info.counts) if info.counts is not None else None,
                    hashlib.sha256(plaintext).hexdigest(),
                    hashlib.sha256(body).hexdigest(),
                    len(body),
                ),
            )
        except StoreError as exc:
            if self.required:
                raise
            log.error(
                "audit log not written",
                extra={"message_id": message_id, "error": str(exc)},
            )
            return None
        return int(rows[0][0])

    def finish(self, row_id: int | None, status: int | None, error: str | None) -> None:
        """Note the response status, or the error when no response came."""
        if row_id is None:
            return
        try:
            self.db.execute(
                "UPDATE audit_log SET status = %s, error = %s, finished_at = now() "
                "WHERE id = %s",
                (status, mask(error)[:300] if error else None, row_id),
            )
        except StoreError as exc:
            # The message is sent by now; failing the push would only resend it.
            log.error(
                "audit log response not written",
                extra={"audit_id": row_id, "status": status, "error": str(exc)},
            )


def list_entries(db: Database, where: AuditFilter) -> list[dict[str, Any]]:
    """Return the newest ``where.limit`` matching rows, oldest first."""
    rows = db.fetch_all(
        "SELECT * FROM (SELECT "  # noqa: S608 - the columns are constants
        + ", ".join(COLUMNS)
        + " FROM audit_log WHERE (%(type)s::text IS NULL OR type = %(type)s) "
        "AND (%(since)s::timestamptz IS NULL OR sent_at >= %(since)s) "
        "AND (%(status)s::int IS NULL OR COALESCE(status, 0) = %(status)s) "
        "AND (%(id)s::text IS NULL OR message_id = %(id)s) "
        "ORDER BY id DESC LIMIT %(limit)s) newest ORDER BY id",
        {
            "type": where.type,
            "since": where.since,
            "status": where.status,
            "id": where.message_id,
            "limit": where.limit,
        },
    )
    return [_entry(row) for row in rows]


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    entry = dict(zip(COLUMNS, row, strict=True))
    for name in ("sent_at", "finished_at"):
        if entry[name] is not None:
            entry[name] = _iso(entry[name])
    return entry


def _iso(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def render(entries: list[dict[str, Any]], *, as_json: bool) -> str:
    """Format rows as JSON lines, or as a table with one line per attempt."""
    if as_json:
        return "\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries)
    lines = [
        f"{'sent at':<24}  {'type':<15}  {'message id':<36}  {'records':>7}  "
        f"{'status':>6}  ciphertext sha-256"
    ]
    for entry in entries:
        status = entry["status"] if entry["status"] is not None else "-"
        records = entry["record_count"] if entry["record_count"] is not None else "-"
        lines.append(
            f"{entry['sent_at']:<24}  {entry['type']:<15}  {entry['message_id']:<36}"
            f"  {records:>7}  {status:>6}  {entry['ciphertext_sha256']}"
        )
        if entry["error"]:
            lines.append(f"{'':<24}  error: {entry['error']}")
    lines.append(f"{len(entries)} attempt(s)")
    return "\n".join(lines)


def lookup_pseudonym(db: Database, pseudonym: str) -> dict[str, Any] | None:
    """Return what ``pseudonym`` stands for, from the table batches fill."""
    rows = db.fetch_all(
        "SELECT pseudonym, kind, original, key_id, first_seen FROM pseudonyms "
        "WHERE pseudonym = %s",
        (pseudonym.strip(),),
    )
    if not rows:
        return None
    found = dict(
        zip(
            ("pseudonym", "kind", "original", "key_id", "first_seen"),
            rows[0],
            strict=True,
        )
    )
    found["first_seen"] = _iso(found["first_seen"])
    return found


def print_preview(
    outbox: Outbox,
    privacy: PolicySettings,
    *,
    as_json: bool,
    write: Callable[[str], None],
) -> None:
    """Write every record the next push would send, one per line, then a summary.

    JSON lines carry ``batch_id`` (None for a record not queued yet),
    ``provider``, ``entity`` and ``record``; text lines the entity and the record.
    """
    counts: Counter[tuple[str, str]] = Counter()
    batches: set[str] = set()
    queued = 0
    for batch_id, provider, entity, record in outbox.preview(privacy):
        counts[(provider, entity)] += 1
        if batch_id:
            batches.add(batch_id)
            queued += 1
        if as_json:
            line = {
                "batch_id": batch_id,
                "provider": provider,
                "entity": entity,
                "record": record,
            }
            write(json.dumps(line, ensure_ascii=False))
        else:
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
            write(f"{entity:<21} {text}")
    if as_json:
        return
    for (provider, entity), count in sorted(counts.items()):
        write(f"# {provider:<10} {entity:<21} {count:>8}")
    total = sum(counts.values())
    write(
        f"# {total} record(s): {queued} in {len(batches)} pending batch(es), "
        f"{total - queued} not queued yet"
    )
    settings = (PEOPLE, TITLES, BRANCHES, REPOSITORIES)
    write("# privacy: " + ", ".join(f"{s}={privacy.action(s)}" for s in settings))
