"""Job runs, commands from MHQ and agent metadata."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Cursor, Database


@dataclass(frozen=True)
class JobRun:
    job: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any]


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def agent_id(self, configured: str | None) -> str:
        """Return the configured agent id, else the one stored on first start."""
        if configured:
            return configured

        def read_or_create(cursor: Cursor) -> str:
            cursor.execute(
                "INSERT INTO agent_meta (key, value) VALUES ('agent_id', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (str(uuid.uuid4()),),
            )
            cursor.execute("SELECT value FROM agent_meta WHERE key = 'agent_id'")
            row = cursor.fetchone()
            assert row is not None
            return str(row[0])

        return self.db.run(read_or_create)

    def set_problems(self, problems: list[str]) -> None:
        """Store the running agent's open problems for ``status`` to show."""
        self.db.execute(
            "INSERT INTO agent_meta (key, value) VALUES ('problems', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (json.dumps(problems),),
        )

    def problems(self) -> list[str]:
        rows = self.db.fetch_all("SELECT value FROM agent_meta WHERE key = 'problems'")
        return list(json.loads(rows[0][0])) if rows else []

    def start_run(self, job: str, trigger: str) -> int:
        rows = self.db.fetch_all(
            "INSERT INTO job_runs (job, trigger) VALUES (%s, %s) RETURNING id",
            (job, trigger),
        )
        return int(rows[0][0])

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE job_runs SET finished_at = now(), status = %s, summary = %s "
            "WHERE id = %s",
            (status, json.dumps(summary, default=str), run_id),
        )

    def close_abandoned_runs(self, job: str | None = None) -> int:
        """Mark runs left 'running' by a process that died as interrupted.

        Call it only while no run of ``job`` (of any job, when None) is in progress.
        """

        def close(cursor: Cursor) -> int:
            cursor.execute(
                "UPDATE job_runs SET status = 'interrupted', finished_at = now() "
                "WHERE status = 'running' AND (%s::text IS NULL OR job = %s)",
                (job, job),
            )
            return int(cursor.rowcount)

        return self.db.run(close)

    def last_runs(self) -> dict[str, JobRun]:
        rows = self.db.fetch_all(
            "SELECT DISTINCT ON (job) job, started_at, finished_at, status, summary "
            "FROM job_runs ORDER BY job, started_at DESC"
        )
        return {row[0]: JobRun(*row) for row in rows}

    def last_started(self, job: str, status: str | None = None) -> datetime | None:
        rows = self.db.fetch_all(
            "SELECT max(started_at) FROM job_runs WHERE job = %s "
            "AND (%s::text IS NULL OR status = %s)",
            (job, status, status),
        )
        return rows[0][0] if rows else None

    # Commands from MHQ

    def receive_command(self, command_id: str, command: str, parameters: Any) -> bool:
        """Store a command; return False when this id was received before."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO commands (id, command, parameters) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (command_id, command, json.dumps(parameters or {})),
            )
            return cursor.rowcount == 1

    def claim_command(self, command_id: str) -> bool:
        """Move a received command to running; False if another run claimed it."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE commands SET status = 'running' WHERE id = %s "
                "AND status = 'received'",
                (command_id,),
            )
            return cursor.rowcount == 1

    def release_command(self, command_id: str) -> None:
        """Put a claimed command back, to run on a later heartbeat."""
        self.db.execute(
            "UPDATE commands SET status = 'received' "
            "WHERE id = %s AND status = 'running'",
            (command_id,),
        )

    def finish_command(
        self, command_id: str, status: str, result: dict[str, Any]
    ) -> None:
        self.db.execute(
            "UPDATE commands SET status = %s, finished_at = now(), result = %s "
            "WHERE id = %s",
            (status, json.dumps(result, default=str), command_id),
        )

    def open_commands(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (row[0], row[1], row[2])
            for row in self.db.fetch_all(
                "SELECT id, command, parameters FROM commands "
                "WHERE status = 'received' ORDER BY received_at"
            )
        ]

    def unreported_results(self) -> list[dict[str, Any]]:
        rows = self.db.fetch_all(
            "SELECT id, command, status, finished_at, result FROM commands "
            "WHERE status IN ('ok', 'failed', 'rejected') AND reported_at IS NULL "
            "ORDER BY finished_at"
        )
        return [
            {
                "id": row[0],
                "command": row[1],
                "status": row[2],
                "finished_at": row[3],
                "result": row[4],
            }
            for row in rows
        ]

    def mark_reported(self, command_ids: list[str]) -> None:
        if command_ids:
            self.db.execute(
                "UPDATE commands SET reported_at = now() WHERE id = ANY(%s)",
                (command_ids,),
            )

    def repository_states(self) -> list[tuple[Any, ...]]:
        return self.db.fetch_all(
            "SELECT s.provider, s.repository_key, s.last_fetch_at, s.status, "
            "s.error_code, s.error_message, "
            "(SELECT count(*) FROM records r WHERE r.provider = s.provider AND "
            "r.repository_key = s.repository_key), "
            "(SELECT count(*) FROM records r LEFT JOIN outbox_batches b "
            "ON b.id = r.queued_batch WHERE r.provider = s.provider AND "
            "r.repository_key = s.repository_key AND ("
            "r.queued_hash IS DISTINCT FROM r.content_hash OR "
            "b.status IN ('pending', 'rejected') OR (b.status = 'split' AND EXISTS ("
            "SELECT 1 FROM outbox_batches c WHERE c.order_seq = COALESCE(b.order_seq, "
            "b.seq) AND c.status IN ('pending', 'rejected'))))) "
            "FROM repository_state s ORDER BY s.provider, s.repository_key"
        )
