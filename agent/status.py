"""``mhq-agent status``: repositories, jobs and the backlog, as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agent.config.settings import Settings
from agent.errors import StoreError
from agent.logs import mask
from agent.schedule import JOBS, next_run
from agent.store.db import Database
from agent.store.outbox import Outbox
from agent.store.state import StateStore


def collect_status(settings: Settings, db: Database) -> dict[str, Any]:
    """Read the status from the database; report a database error instead of failing."""
    try:
        return _collect(settings, db)
    except StoreError as exc:
        return {
            "database": f"error: {mask(str(exc))}",
            "problems": [],
            "repositories": [],
            "jobs": {},
            "backlog": None,
            "timezone": settings.get("schedule.timezone"),
        }


def _collect(settings: Settings, db: Database) -> dict[str, Any]:
    state = StateStore(db)
    repositories = [
        {
            "provider": provider,
            "repository": key,
            "last_fetch_at": _iso(last_fetch),
            "status": status,
            "error": {"code": code, "message": message} if code else None,
            "records": held,
            "unsent": unsent,
        }
        for (
            provider,
            key,
            last_fetch,
            status,
            code,
            message,
            held,
            unsent,
        ) in state.repository_states()
    ]
    runs = state.last_runs()
    jobs = {
        job: {
            "schedule": settings.get(f"schedule.{job}"),
            "last_started_at": _iso(runs[job].started_at) if job in runs else None,
            "last_finished_at": _iso(runs[job].finished_at) if job in runs else None,
            "last_status": runs[job].status if job in runs else None,
            "next_run_at": _iso(next_run(settings, job)),
        }
        for job in JOBS
    }
    backlog = Outbox(db).backlog()
    return {
        "database": "ok",
        "problems": state.problems(),
        "repositories": repositories,
        "jobs": jobs,
        "backlog": {
            "unqueued_records": backlog.unqueued_records,
            "pending_batches": backlog.pending_batches,
            "pending_records": backlog.pending_records,
            "rejected_batches": backlog.rejected_batches,
            "rejected_records": backlog.rejected_records,
        },
        "timezone": settings.get("schedule.timezone"),
    }


def render_status(report: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(report, indent=2)
    lines = [f"Database: {report['database']}"]
    for problem in report["problems"]:
        lines.append(f"Problem: {problem}")
    if report["backlog"] is None:
        return "\n".join(lines)
    lines += ["", "Repositories"]
    rows = [
        ("provider", "repository", "last fetch", "status", "records", "unsent", "error")
    ]
    for repo in report["repositories"]:
        error = repo["error"]["code"] if repo["error"] else ""
        rows.append(
            (
                repo["provider"],
                repo["repository"],
                repo["last_fetch_at"] or "never",
                repo["status"],
                str(repo["records"]),
                str(repo["unsent"]),
                error,
            )
        )
    lines += _table(rows) if len(rows) > 1 else ["  (none fetched yet)"]
    lines += ["", "Jobs"]
    job_rows = [("job", "schedule", "last started", "last status", "next run")]
    for job, info in report["jobs"].items():
        job_rows.append(
            (
                job,
                info["schedule"],
                info["last_started_at"] or "never",
                info["last_status"] or "-",
                info["next_run_at"] or "-",
            )
        )
    lines += _table(job_rows)
    backlog = report["backlog"]
    lines += [
        "",
        "Backlog",
        f"  records not yet batched: {backlog['unqueued_records']}",
        f"  pending batches: {backlog['pending_batches']} "
        f"({backlog['pending_records']} records)",
        f"  rejected batches: {backlog['rejected_batches']} "
        f"({backlog['rejected_records']} records; resend with: "
        "mhq-agent push --retry-rejected)",
    ]
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
