"""The outbox: batches of records waiting for MHQ, in delivery order.

Building a batch and marking its records queued happen in one transaction, and a
batch's envelope is stored once, so every retry sends the same message under the
same id. A record changed after it was queued is queued again in a later batch.
"""

from __future__ import annotations

import functools
import json
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.processing.records import ENTITIES
from agent.store.db import Cursor, Database

# Bytes a record adds to the envelope beyond its JSON: the comma between items.
_SEPARATOR_BYTES = 1


@dataclass(frozen=True)
class Batch:
    id: str
    provider: str
    status: str
    record_count: int
    counts: dict[str, int]
    envelope: bytes
    attempts: int
    order_path: str


@dataclass(frozen=True)
class Backlog:
    unqueued_records: int
    pending_batches: int
    pending_records: int
    rejected_batches: int
    rejected_records: int


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def build_batches(
        self,
        *,
        agent_id: str,
        agent_version: str,
        max_records: int,
        max_bytes: int,
    ) -> list[str]:
        """Queue every record not yet queued into batches; return the new batch ids."""
        created: list[str] = []
        providers = self.db.fetch_all(
            "SELECT DISTINCT provider FROM records "
            "WHERE queued_hash IS DISTINCT FROM content_hash"
        )
        for (provider,) in providers:
            while True:
                # Safe to repeat: a batch committed before a lost connection has
                # marked its records queued, so the repeat takes the next ones.
                batch_id = self.db.run(
                    functools.partial(
                        _build_one,
                        provider=provider,
                        agent_id=agent_id,
                        agent_version=agent_version,
                        max_records=max_records,
                        max_bytes=max_bytes,
                    )
                )
                if batch_id is None:
                    break
                created.append(batch_id)
        return created

    def pending(self, *, include_rejected: bool = False) -> Iterator[Batch]:
        """Yield pending batches in delivery order, one query per batch."""
        statuses = ["pending", "rejected"] if include_rejected else ["pending"]
        after: tuple[int, str] = (-1, "")
        while True:
            rows = self.db.fetch_all(
                "SELECT id, provider, status, record_count, counts, envelope, "
                "attempts, order_path, COALESCE(order_seq, seq) FROM outbox_batches "
                "WHERE status = ANY(%s) AND (COALESCE(order_seq, seq), order_path) > "
                "(%s, %s) ORDER BY COALESCE(order_seq, seq), order_path LIMIT 1",
                (statuses, after[0], after[1]),
            )
            if not rows:
                return
            row = rows[0]
            after = (row[8], row[7])
            yield Batch(
                str(row[0]),
                row[1],
                row[2],
                row[3],
                row[4],
                zlib.decompress(bytes(row[5])),
                row[6],
                row[7],
            )

    def record_attempt(
        self, batch_id: str, status: int | None, error: str | None
    ) -> None:
        self.db.execute(
            "UPDATE outbox_batches SET attempts = attempts + 1, "
            "last_attempt_at = now(), last_status = %s, last_error = %s WHERE id = %s",
            (status, error, batch_id),
        )

    def mark(self, batch_id: str, status: str) -> None:
        self.db.execute(
            "UPDATE outbox_batches SET status = %s, delivered_at = CASE WHEN %s = "
            "'delivered' THEN now() END WHERE id = %s",
            (status, status, batch_id),
        )

    def split(self, batch: Batch) -> list[str]:
        """Replace ``batch`` by two halves that keep its place in the order."""
        envelope = json.loads(batch.envelope)
        items = [
            (entity, record)
            for entity, records in envelope["data"]["records"].items()
            for record in records
        ]
        middle = len(items) // 2
        halves = [items[:middle], items[middle:]]

        def split_once(cursor: Cursor) -> list[str]:
            # The status guard makes a repeat after a lost COMMIT a no-op, so the
            # records never travel in two pairs of halves under different ids.
            cursor.execute(
                "UPDATE outbox_batches SET status = 'split' WHERE id = %s "
                "AND status IN ('pending', 'rejected')",
                (batch.id,),
            )
            if cursor.rowcount == 0:
                return []
            return [
                _insert_half(cursor, batch, envelope, half, str(position))
                for position, half in enumerate(halves)
            ]

        return self.db.run(split_once)

    def retry_rejected(self) -> int:
        def reopen(cursor: Cursor) -> int:
            cursor.execute(
                "UPDATE outbox_batches SET status = 'pending' WHERE status = 'rejected'"
            )
            return int(cursor.rowcount)

        return self.db.run(reopen)

    def backlog(self) -> Backlog:
        rows = self.db.fetch_all(
            "SELECT (SELECT count(*) FROM records "
            "  WHERE queued_hash IS DISTINCT FROM content_hash), "
            "count(*) FILTER (WHERE status = 'pending'), "
            "COALESCE(sum(record_count) FILTER (WHERE status = 'pending'), 0), "
            "count(*) FILTER (WHERE status = 'rejected'), "
            "COALESCE(sum(record_count) FILTER (WHERE status = 'rejected'), 0) "
            "FROM outbox_batches"
        )
        return Backlog(*(int(v) for v in rows[0]))


def _build_one(
    cursor: Cursor,
    provider: str,
    agent_id: str,
    agent_version: str,
    max_records: int,
    max_bytes: int,
) -> str | None:
    cursor.execute(
        "SELECT entity, record_key, payload::text, content_hash FROM records "
        "WHERE provider = %s AND queued_hash IS DISTINCT FROM content_hash "
        "ORDER BY change_seq LIMIT %s FOR UPDATE",
        (provider, max_records),
    )
    grouped: dict[str, list[str]] = {}
    taken: list[tuple[str, str, bytes]] = []
    size = 0
    for entity, key, text, digest in cursor.fetchall():
        length = len(text.encode("utf-8")) + _SEPARATOR_BYTES
        if taken and size + length > max_bytes:
            break
        size += length
        grouped.setdefault(entity, []).append(text)
        taken.append((entity, key, bytes(digest)))
    if not taken:
        return None
    batch_id = str(uuid.uuid4())
    envelope = render_envelope(batch_id, agent_id, agent_version, provider, grouped)
    counts = {entity: len(texts) for entity, texts in grouped.items()}
    cursor.execute(
        "INSERT INTO outbox_batches (id, provider, record_count, counts, envelope) "
        "VALUES (%s, %s, %s, %s, %s)",
        (
            batch_id,
            provider,
            len(taken),
            json.dumps(counts),
            zlib.compress(envelope, 6),
        ),
    )
    cursor.execute(
        "UPDATE records AS r SET queued_hash = t.digest, queued_batch = %s "
        "FROM unnest(%s::text[], "
        "%s::text[], %s::bytea[]) AS t(entity, record_key, digest) WHERE "
        "r.provider = %s AND r.entity = t.entity AND r.record_key = t.record_key",
        (
            batch_id,
            [t[0] for t in taken],
            [t[1] for t in taken],
            [t[2] for t in taken],
            provider,
        ),
    )
    return batch_id


def render_envelope(
    message_id: str,
    agent_id: str,
    agent_version: str,
    provider: str,
    grouped: dict[str, list[str]],
) -> bytes:
    """Build a sync.batch envelope from records that are already JSON text."""
    head = {
        "schema_version": 1,
        "type": "sync.batch",
        "message_id": message_id,
        "agent_id": agent_id,
        "agent_version": agent_version,
        "created_at": utc_now(),
    }
    arrays = ",".join(
        f"{json.dumps(entity)}:[{','.join(grouped[entity])}]"
        for entity in ENTITIES
        if entity in grouped
    )
    data = f'"data":{{"provider":{json.dumps(provider)},"records":{{{arrays}}}}}'
    return (json.dumps(head)[:-1] + "," + data + "}").encode("utf-8")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _insert_half(
    cursor: Cursor,
    parent: Batch,
    envelope: dict[str, Any],
    half: list[tuple[str, Any]],
    position: str,
) -> str:
    batch_id = str(uuid.uuid4())
    grouped: dict[str, list[str]] = {}
    for entity, record in half:
        grouped.setdefault(entity, []).append(json.dumps(record, ensure_ascii=False))
    body = render_envelope(
        batch_id,
        envelope["agent_id"],
        envelope["agent_version"],
        parent.provider,
        grouped,
    )
    counts = {entity: len(texts) for entity, texts in grouped.items()}
    cursor.execute(
        "INSERT INTO outbox_batches (id, provider, record_count, counts, envelope, "
        "parent_id, order_seq, order_path) SELECT %s, %s, %s, %s, %s, id, "
        "COALESCE(order_seq, seq), order_path || %s FROM outbox_batches WHERE id = %s",
        (
            batch_id,
            parent.provider,
            len(half),
            json.dumps(counts),
            zlib.compress(body, 6),
            position,
            parent.id,
        ),
    )
    return batch_id
