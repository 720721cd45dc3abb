"""The outbox: batches of records waiting for MHQ, in delivery order.

Building a batch and marking its records queued happen in one transaction, and a
batch's envelope is stored once, so every retry sends the same message under the
same id. A record changed after it was queued is queued again in a later batch.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2.extras

from agent.processing.privacy import (
    DEFAULT_FINGERPRINT,
    HIDDEN_VALUE_FIELDS,
    MIN_HIDDEN_LENGTH,
    Policy,
    PolicySettings,
    expand_hidden_values,
)
from agent.processing.records import ENTITIES
from agent.store.db import Cursor, Database

log = logging.getLogger(__name__)

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
        privacy: PolicySettings | None = None,
    ) -> list[str]:
        """Queue every record not yet queued into batches; return the new batch ids.

        The privacy policy is applied here, to the batch's copy of each record. A
        pending batch built under other privacy settings is rebuilt first.
        """
        privacy = privacy or PolicySettings()
        self.rebuild_stale(privacy.fingerprint())
        policy = self.policy(privacy)
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
                        policy=policy,
                    )
                )
                if batch_id is None:
                    break
                policy.mark_saved()
                created.append(batch_id)
        return created

    def policy(self, privacy: PolicySettings) -> Policy:
        """Return the policy with every name it hides that the store holds."""
        if not privacy.active:
            return Policy(privacy)
        return Policy(privacy, self.hidden_values(privacy))

    def hidden_values(
        self, privacy: PolicySettings, entities: tuple[str, ...] | None = None
    ) -> list[tuple[str, str]]:
        """Return (kind, value) of every stored name the settings hide.

        One scan of the records of each entity involved (of ``entities`` only,
        when given), made once per push.
        """
        fields: dict[str, list[tuple[str, str]]] = {}
        for setting in privacy.hidden_settings():
            for entity, field, kind in HIDDEN_VALUE_FIELDS.get(setting, ()):
                if entities is None or entity in entities:
                    fields.setdefault(entity, []).append((kind, field))
        rows: list[tuple[str, str]] = []
        for entity, pairs in fields.items():
            values = ", ".join("(%s, payload->>%s)" for _ in pairs)
            rows += self.db.fetch_all(
                "SELECT DISTINCT v.kind, v.value FROM records, "  # noqa: S608
                f"LATERAL (VALUES {values}) AS v(kind, value) WHERE entity = %s "
                "AND length(v.value) >= %s",
                (*(p for pair in pairs for p in pair), entity, MIN_HIDDEN_LENGTH),
            )
        return expand_hidden_values(rows)

    def save_pseudonyms(self, policy: Policy) -> None:
        """Add the pseudonyms ``policy`` made outside a batch to the lookup table."""
        made = policy.take_unsaved()
        if made:
            self.db.run(lambda cursor: _save_pseudonyms(cursor, made, policy.key_id))
            policy.mark_saved()

    def rebuild_stale(
        self, fingerprint: str, statuses: tuple[str, ...] = ("pending",)
    ) -> int:
        """Drop batches built under other privacy settings and requeue their records.

        Records name the batch they were queued in, which for a split batch is the
        batch before the split. So all its records are queued again, including
        those of a half already delivered, which MHQ then gets twice but never
        under the old settings. Returns the number of batches dropped.
        """

        def rebuild(cursor: Cursor) -> int:
            stale = _stale_batches(cursor, fingerprint, statuses)
            if not stale:
                return 0
            cursor.execute(
                "UPDATE records SET queued_hash = NULL, queued_batch = NULL "
                "WHERE queued_batch = ANY(%s::uuid[])",
                (_with_ancestors(cursor, stale),),
            )
            cursor.execute(
                "DELETE FROM outbox_batches WHERE id = ANY(%s::uuid[])", (stale,)
            )
            return len(stale)

        dropped = self.db.run(rebuild)
        if dropped:
            log.warning(
                "batches built under other privacy settings dropped; their records "
                "are queued again",
                extra={"batches": dropped},
            )
        return dropped

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

    def preview(
        self, privacy: PolicySettings
    ) -> Iterator[tuple[str | None, str, str, dict[str, Any]]]:
        """Yield (batch id, provider, entity, record) for what the next push sends.

        First the pending batches, then the records not queued yet (batch id
        None), under the policy as a push would apply it now. Nothing is written,
        not even the pseudonym lookup table.
        """
        fingerprint = privacy.fingerprint()
        stale = self.db.run(lambda c: _stale_batches(c, fingerprint, ("pending",)))
        requeued = self.db.run(lambda c: _with_ancestors(c, stale)) if stale else []
        for batch in self.pending():
            if batch.id in stale:
                continue
            envelope = json.loads(batch.envelope)
            for entity, records in envelope["data"]["records"].items():
                for record in records:
                    yield batch.id, batch.provider, entity, record
        policy = self.policy(privacy)
        providers = self.db.fetch_all("SELECT DISTINCT provider FROM records")
        for (provider,) in sorted(providers):
            for entity, stored in self._unqueued(provider, requeued):
                yield (
                    None,
                    provider,
                    entity,
                    json.loads(sent_text(policy, entity, stored)),
                )

    def _unqueued(
        self, provider: str, requeued: list[str]
    ) -> Iterator[tuple[str, str]]:
        after = -1
        while True:
            rows = self.db.fetch_all(
                "SELECT entity, change_seq, payload::text FROM records "
                "WHERE provider = %s AND (queued_hash IS DISTINCT FROM content_hash "
                "OR queued_batch = ANY(%s::uuid[])) AND change_seq > %s "
                "ORDER BY change_seq LIMIT 1000",
                (provider, requeued, after),
            )
            if not rows:
                return
            for entity, seq, stored in rows:
                yield entity, stored
                after = seq

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
    policy: Policy,
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
    policy.take_unsaved()
    for entity, key, stored, digest in cursor.fetchall():
        text = sent_text(policy, entity, stored)
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
        "INSERT INTO outbox_batches (id, provider, record_count, counts, envelope, "
        "privacy_policy) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            batch_id,
            provider,
            len(taken),
            json.dumps(counts),
            zlib.compress(envelope, 6),
            policy.settings.fingerprint(),
        ),
    )
    _save_pseudonyms(cursor, policy.take_unsaved(), policy.key_id)
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
        "parent_id, order_seq, order_path, privacy_policy) SELECT %s, %s, %s, %s, "
        "%s, id, COALESCE(order_seq, seq), order_path || %s, privacy_policy "
        "FROM outbox_batches WHERE id = %s",
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


def sent_text(policy: Policy, entity: str, stored: str) -> str:
    """Return a stored record's JSON as sent; parsed only when it may change."""
    if not policy.needs_parsing(stored):
        return stored
    sent = policy.apply(entity, json.loads(stored))
    return json.dumps(sent, ensure_ascii=False)


def _save_pseudonyms(
    cursor: Cursor, made: dict[str, tuple[str, str]], key_id: str | None
) -> None:
    """Add pseudonyms to the lookup table; a batch does so in its transaction."""
    if not made:
        return
    psycopg2.extras.execute_values(
        cursor,
        "INSERT INTO pseudonyms (pseudonym, kind, original, key_id) VALUES %s "
        "ON CONFLICT (pseudonym) DO NOTHING",
        [(p, kind, original, key_id) for p, (kind, original) in made.items()],
        page_size=1000,
    )


def _stale_batches(
    cursor: Cursor, fingerprint: str, statuses: tuple[str, ...]
) -> list[str]:
    cursor.execute(
        "SELECT id FROM outbox_batches WHERE status = ANY(%s) "
        "AND COALESCE(privacy_policy, %s) <> %s",
        (list(statuses), DEFAULT_FINGERPRINT, fingerprint),
    )
    return [str(row[0]) for row in cursor.fetchall()]


def _with_ancestors(cursor: Cursor, batch_ids: list[str]) -> list[str]:
    cursor.execute(
        "WITH RECURSIVE chain(id, parent_id) AS (SELECT id, parent_id FROM "
        "outbox_batches WHERE id = ANY(%s::uuid[]) UNION SELECT b.id, b.parent_id "
        "FROM outbox_batches b JOIN chain ON b.id = chain.parent_id) "
        "SELECT id FROM chain",
        (batch_ids,),
    )
    return [str(row[0]) for row in cursor.fetchall()]
