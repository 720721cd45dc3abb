"""Heartbeats to MHQ, and the signed commands that may come back with them."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent import __version__
from agent.config.settings import Settings
from agent.errors import StoreError
from agent.logs import mask
from agent.push.client import NETWORK_ERRORS, MhqClient
from agent.schedule import JOBS, next_run
from agent.store.db import Database
from agent.store.outbox import Outbox, utc_now
from agent.store.state import StateStore

log = logging.getLogger(__name__)

COMMANDS = frozenset({"sync_now", "resync"})
PROCESS_STARTED = time.time()


@dataclass
class HeartbeatResult:
    status: int | None = None
    error: str | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)


def build_heartbeat(
    settings: Settings, db: Database, problems: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Return the heartbeat's data and the command ids whose results it reports."""
    data: dict[str, Any] = {
        "started_at": _rfc3339(PROCESS_STARTED),
        "uptime_s": round(time.time() - PROCESS_STARTED),
        "hostname": socket.gethostname(),
        "jobs": {},
        "backlog": None,
        "repositories": {},
        "database": "ok",
        "command_results": [],
        "problems": [mask(p) for p in problems],
    }
    reported: list[str] = []
    try:
        state = StateStore(db)
        data["jobs"] = _jobs(settings, state)
        backlog = Outbox(db).backlog()
        data["backlog"] = {
            "unsent_records": backlog.unqueued_records + backlog.pending_records,
            "pending_batches": backlog.pending_batches,
            "rejected_batches": backlog.rejected_batches,
            "rejected_records": backlog.rejected_records,
        }
        data["repositories"] = _repositories(state)
        results = state.unreported_results()
        for result in results:
            result["finished_at"] = _iso(result["finished_at"])
        data["command_results"] = results
        reported = [r["id"] for r in results]
    except StoreError as exc:
        data["database"] = f"error: {mask(str(exc))[:200]}"
    return data, reported


def _jobs(settings: Settings, state: StateStore) -> dict[str, Any]:
    runs = state.last_runs()
    jobs = {}
    for job in JOBS:
        run = runs.get(job)
        jobs[job] = {
            "last_started_at": _iso(run.started_at) if run else None,
            "last_finished_at": _iso(run.finished_at) if run else None,
            "last_status": run.status if run else None,
            "next_run_at": _iso(next_run(settings, job)),
        }
    return jobs


def _repositories(state: StateStore) -> dict[str, Any]:
    repositories = {}
    for (
        provider,
        key,
        last_fetch,
        status,
        code,
        message,
        *_,
    ) in state.repository_states():
        repositories[key] = {
            "provider": provider,
            "last_fetch_at": _iso(last_fetch),
            "status": status,
            "error": {"code": code, "message": mask(message or "")[:300]}
            if code
            else None,
        }
    return repositories


def send_heartbeat(
    settings: Settings, db: Database, agent_id: str, problems: list[str]
) -> HeartbeatResult:
    """Send one heartbeat; store verified commands from the response."""
    client = MhqClient(settings)
    data, reported = build_heartbeat(settings, db, problems)
    message_id = str(uuid.uuid4())
    envelope = {
        "schema_version": 1,
        "type": "agent.heartbeat",
        "message_id": message_id,
        "agent_id": agent_id,
        "agent_version": __version__,
        "created_at": utc_now(),
        "data": data,
    }
    plaintext = json.dumps(envelope, default=str).encode("utf-8")
    result = HeartbeatResult()
    try:
        response = client.post(client.heartbeat_url, message_id, plaintext)
    except NETWORK_ERRORS as exc:
        result.error = f"{type(exc).__name__}: {mask(str(exc))[:200]}"
        log.error("heartbeat failed", extra={"error": result.error})
        return result
    finally:
        client.close()
    result.status = response.status_code
    if not 200 <= response.status_code < 300:
        result.error = f"MHQ answered {response.status_code}"
        log.error("heartbeat rejected", extra={"status": response.status_code})
        return result
    _mark_reported(db, reported)
    result.commands = _accept_commands(client, db, response.content, response.headers)
    log.info(
        "heartbeat sent",
        extra={"message_id": message_id, "commands": len(result.commands)},
    )
    return result


def _mark_reported(db: Database, reported: list[str]) -> None:
    try:
        StateStore(db).mark_reported(reported)
    except StoreError as exc:
        log.error("cannot record reported command results", extra={"error": str(exc)})


def _accept_commands(
    client: MhqClient, db: Database, body: bytes, headers: Any
) -> list[dict[str, Any]]:
    if not body.strip():
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []
    commands = document.get("commands") if isinstance(document, dict) else None
    if not commands:
        return []
    if not client.signer.verify(body, headers):
        log.error(
            "heartbeat response carries commands with an invalid signature; ignored",
            extra={"commands": len(commands)},
        )
        return []
    return _store_commands(db, commands)


def _store_commands(db: Database, commands: list[Any]) -> list[dict[str, Any]]:
    state = StateStore(db)
    accepted = []
    for command in commands:
        if not isinstance(command, dict) or not command.get("id"):
            log.error(
                "malformed command ignored", extra={"command": str(command)[:200]}
            )
            continue
        name = str(command.get("command"))
        parameters = command.get("parameters") or {}
        if not state.receive_command(str(command["id"]), name, parameters):
            log.info("command already received", extra={"command_id": command["id"]})
            continue
        if name not in COMMANDS:
            state.finish_command(
                str(command["id"]), "rejected", {"error": f"unknown command {name!r}"}
            )
            continue
        accepted.append(command)
        log.info(
            "command received", extra={"command_id": command["id"], "command": name}
        )
    return accepted


def _rfc3339(epoch: float) -> str:
    return _iso(datetime.fromtimestamp(epoch, tz=UTC)) or ""


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
