"""Records, bookmarks and repository state: what the fetch job writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extras

from agent.logs import mask
from agent.processing.records import Record
from agent.providers.base import ChildSet, Page, RecordFailure
from agent.store.db import Cursor, Database


@dataclass(frozen=True)
class PageResult:
    changed: int
    deleted: int
    # Records the store cannot hold, such as text with a NUL character.
    failures: list[RecordFailure] = field(default_factory=list)


class RecordStore:
    """Writes pages atomically and answers the provider's questions about state."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def apply_page(self, provider: str, repository_key: str, page: Page) -> PageResult:
        """Store a page's records, deletions and bookmark in one transaction.

        A record Postgres cannot store is left out and returned as a failure, so
        the rest of the page is stored. The transaction is repeated when the
        connection breaks, which is safe because every statement is an upsert.
        """
        records, failures = _storable(_unique(page.records))

        def write(cursor: Cursor) -> PageResult:
            changed = _upsert(cursor, provider, records, page.versions)
            deleted = sum(_replace_children(cursor, provider, c) for c in page.children)
            if page.bookmark:
                cursor.execute(
                    "INSERT INTO bookmarks (provider, repository_key, stream, value) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (provider, repository_key, "
                    "stream) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    (provider, repository_key, page.stream, page.bookmark),
                )
            return PageResult(changed, deleted, failures)

        return self.db.run(write)

    def bookmark(self, provider: str, repository_key: str, stream: str) -> str | None:
        rows = self.db.fetch_all(
            "SELECT value FROM bookmarks WHERE provider = %s AND repository_key = %s "
            "AND stream = %s",
            (provider, repository_key, stream),
        )
        return rows[0][0] if rows else None

    def versions(
        self, provider: str, entity: str, keys: Sequence[str]
    ) -> dict[str, str]:
        if not keys:
            return {}
        rows = self.db.fetch_all(
            "SELECT record_key, source_version FROM records WHERE provider = %s AND "
            "entity = %s AND record_key = ANY(%s) AND source_version IS NOT NULL",
            (provider, entity, list(keys)),
        )
        return {key: version for key, version in rows}

    def children(
        self, provider: str, entity: str, parent_id: str, key_prefix: str = ""
    ) -> dict[str, dict[str, Any]]:
        rows = self.db.fetch_all(
            "SELECT record_key, payload FROM records WHERE provider = %s AND "
            "entity = %s AND parent_id = %s AND starts_with(record_key, %s)",
            (provider, entity, parent_id, key_prefix),
        )
        return {key: payload for key, payload in rows}

    def view(self, provider: str, repository_key: str) -> RepositoryState:
        return RepositoryState(self, provider, repository_key)

    def record_outcome(
        self,
        provider: str,
        repository_key: str,
        *,
        status: str,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Record a repository's last fetch: ``ok``, ``partial`` or ``failed``."""
        self.db.execute(
            "INSERT INTO repository_state (provider, repository_key, last_fetch_at, "
            "last_success_at, status, error_code, error_message) "
            "VALUES (%s, %s, now(), CASE WHEN %s = 'ok' THEN now() END, %s, %s, %s) "
            "ON CONFLICT (provider, repository_key) DO UPDATE SET "
            "last_fetch_at = now(), last_success_at = COALESCE("
            "EXCLUDED.last_success_at, repository_state.last_success_at), "
            "status = EXCLUDED.status, error_code = EXCLUDED.error_code, "
            "error_message = EXCLUDED.error_message",
            (
                provider,
                repository_key,
                status,
                status,
                error_code,
                # Stored masked: status and heartbeats show it to people and MHQ.
                mask(error_message) if error_message else None,
            ),
        )

    def reset_for_resync(
        self,
        provider: str | None,
        repository_keys: Sequence[str] | None,
        since: str | None,
    ) -> int:
        """Make the next fetch start again from ``since`` (or the start) and resend.

        Returns the number of records that will be sent again.
        """
        scope = (
            "(%(provider)s::text IS NULL OR provider = %(provider)s) AND "
            "(%(keys)s::text[] IS NULL OR repository_key = ANY(%(keys)s))"
        )
        params = {
            "provider": provider,
            "keys": list(repository_keys) if repository_keys else None,
            "since": since,
        }

        def reset(cursor: Cursor) -> int:
            if since:
                cursor.execute(
                    "UPDATE bookmarks SET value = LEAST(value, %(since)s) WHERE "  # noqa: S608
                    + scope,
                    params,
                )
            else:
                cursor.execute("DELETE FROM bookmarks WHERE " + scope, params)  # noqa: S608
            cursor.execute(
                "UPDATE records SET queued_hash = NULL, source_version = NULL WHERE "  # noqa: S608
                + scope
                + " AND (%(since)s::text IS NULL OR COALESCE(payload->>'updated_at', "
                "payload->>'created_at', '9999') >= %(since)s)",
                params,
            )
            return int(cursor.rowcount)

        return self.db.run(reset)


class RepositoryState:
    """The ``StateView`` of one repository, read through the record store."""

    def __init__(self, store: RecordStore, provider: str, repository_key: str) -> None:
        self._store = store
        self._provider = provider
        self._repository_key = repository_key

    def bookmark(self, stream: str) -> str | None:
        return self._store.bookmark(self._provider, self._repository_key, stream)

    def versions(self, entity: str, keys: Sequence[str]) -> dict[str, str]:
        return self._store.versions(self._provider, entity, keys)

    def children(
        self, entity: str, parent_id: str, key_prefix: str = ""
    ) -> dict[str, dict[str, Any]]:
        return self._store.children(self._provider, entity, parent_id, key_prefix)


def _storable(records: list[Record]) -> tuple[list[Record], list[RecordFailure]]:
    """Split off records holding a NUL character, which Postgres text and jsonb reject.

    One such record would otherwise fail the whole page's transaction.
    """
    kept: list[Record] = []
    failures: list[RecordFailure] = []
    for record in records:
        values = (record.payload, record.key, record.repository_key, record.parent_id)
        if _has_nul(values):
            failures.append(
                RecordFailure(
                    record.entity,
                    record.id,
                    "holds a NUL character (U+0000), which Postgres cannot store",
                )
            )
        else:
            kept.append(record)
    return kept, failures


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def _unique(records: list[Record]) -> list[Record]:
    """Keep the last of records sharing a key, as one statement may touch a row once."""
    unique: dict[tuple[str, str], Record] = {}
    for record in records:
        unique[(record.entity, record.key)] = record
    return list(unique.values())


def _upsert(
    cursor: Cursor,
    provider: str,
    records: list[Record],
    versions: dict[tuple[str, str], str],
) -> int:
    if not records:
        return 0
    cursor.execute(
        "SELECT entity, record_key, content_hash, source_version FROM records "
        "WHERE provider = %s AND (entity, record_key) IN "
        "(SELECT * FROM unnest(%s, %s))",
        (provider, [r.entity for r in records], [r.key for r in records]),
    )
    existing: dict[tuple[str, str], tuple[bytes, str | None]] = {
        (e, k): (bytes(h), v) for e, k, h, v in cursor.fetchall()
    }
    rows = []
    changed = 0
    for record in records:
        digest = record.content_hash()
        version = versions.get((record.entity, record.key))
        before = existing.get((record.entity, record.key))
        if before is None:
            is_changed = True
        else:
            is_changed = before[0] != digest
            if not is_changed and (version is None or before[1] == version):
                continue
        changed += is_changed
        rows.append(
            (
                provider,
                record.entity,
                record.key,
                record.repository_key,
                record.parent_id,
                version,
                json.dumps(record.payload, ensure_ascii=False),
                digest,
                is_changed,
            )
        )
    if rows:
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO records (provider, entity, record_key, repository_key, "
            "parent_id, source_version, payload, content_hash, change_seq) VALUES %s "
            "ON CONFLICT (provider, entity, record_key) DO UPDATE SET "
            "repository_key = EXCLUDED.repository_key, parent_id = EXCLUDED.parent_id, "
            "source_version = COALESCE(EXCLUDED.source_version, "
            "records.source_version), "
            "payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, "
            "change_seq = CASE WHEN records.content_hash = EXCLUDED.content_hash "
            "THEN records.change_seq ELSE EXCLUDED.change_seq END, "
            "updated_at = now()",
            [row[:8] for row in rows],
            template="(%s, %s, %s, %s, %s, %s, %s::jsonb, %s, "
            "nextval('record_change_seq'))",
            page_size=500,
        )
        _forget_deletions(cursor, provider, [r for r in rows if r[8]])
    return changed


def _forget_deletions(
    cursor: Cursor, provider: str, rows: list[tuple[object, ...]]
) -> None:
    """Drop deletion records of records that exist again, so a later delete is sent."""
    keys = [f"{row[1]}:{row[2]}" for row in rows if row[1] != "deletions"]
    if keys:
        cursor.execute(
            "DELETE FROM records WHERE provider = %s AND entity = 'deletions' "
            "AND record_key = ANY(%s)",
            (provider, keys),
        )


def _replace_children(cursor: Cursor, provider: str, children: ChildSet) -> int:
    cursor.execute(
        "DELETE FROM records WHERE provider = %s AND entity = %s AND parent_id = %s "
        "AND starts_with(record_key, %s) AND NOT (record_key = ANY(%s)) "
        "RETURNING record_key, payload->>'id', repository_key",
        (
            provider,
            children.entity,
            children.parent_id,
            children.key_prefix,
            list(children.keys),
        ),
    )
    gone = cursor.fetchall()
    for record_key, record_id, repository_key in gone:
        payload = {"provider": provider, "id": record_id, "entity": children.entity}
        cursor.execute(
            "INSERT INTO records (provider, entity, record_key, repository_key, "
            "payload, content_hash, change_seq) VALUES (%s, 'deletions', %s, %s, "
            "%s::jsonb, sha256(convert_to(%s, 'UTF8')), nextval('record_change_seq')) "
            "ON CONFLICT (provider, entity, record_key) DO NOTHING",
            (
                provider,
                f"{children.entity}:{record_key}",
                repository_key,
                json.dumps(payload),
                json.dumps(payload, sort_keys=True),
            ),
        )
    return len(gone)
