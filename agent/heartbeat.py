"""Heartbeats to MHQ, and the signed commands that may come back with them."""

from __future__ import annotations

import json
import logging
import re
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
from agent.processing.privacy import (
    BRANCHES,
    HEX_DIGITS,
    PEOPLE,
    PREFIX,
    REDACT,
    REPOSITORIES,
    REPOSITORY,
    Policy,
    PolicySettings,
)
from agent.push.audit import AuditLog, MessageInfo
from agent.push.client import NETWORK_ERRORS, MhqClient
from agent.schedule import JOBS, next_run
from agent.store.db import Database
from agent.store.outbox import Outbox, utc_now
from agent.store.state import StateStore

log = logging.getLogger(__name__)

COMMANDS = frozenset({"sync_now", "resync"})
PROCESS_STARTED = time.time()
# Sent instead of an error text while people, branch or repository names are
# hidden: error texts quote URLs and paths that may contain them.
WITHHELD = "withheld: the privacy policy hides names this text may contain"


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
        _apply_privacy(data, settings, db)
    except StoreError as exc:
        data["database"] = f"error: {mask(str(exc))[:200]}"
    return data, reported


def _apply_privacy(data: dict[str, Any], settings: Settings, db: Database) -> None:
    """Hide in the heartbeat what the privacy policy hides in records.

    Repository keys become what the repository record's ``key`` is sent as; under
    ``redact``, where that is null, ``<provider>:<repository id>`` instead. Error
    texts are withheld.
    """
    privacy = PolicySettings.from_values(settings.get)
    if not any(
        s in privacy.hidden_settings() for s in (PEOPLE, BRANCHES, REPOSITORIES)
    ):
        return
    outbox = Outbox(db)
    # Usernames are the only hidden names a repository key can hold.
    policy = Policy(privacy, outbox.hidden_values(privacy, entities=("users",)))
    data["repositories"] = _private_repositories(data["repositories"], policy, db)
    data["problems"] = [WITHHELD for _ in data["problems"]]
    for result in data["command_results"]:
        if isinstance(result.get("result"), dict) and result["result"].get("error"):
            result["result"] = {**result["result"], "error": WITHHELD}
    outbox.save_pseudonyms(policy)


def _private_repositories(
    repositories: dict[str, Any], policy: Policy, db: Database
) -> dict[str, Any]:
    ids: dict[tuple[str, str], str] = {}
    if policy.settings.repository_names == REDACT:
        ids = {
            (provider, key): repository_id
            for provider, key, repository_id in db.fetch_all(
                "SELECT provider, repository_key, payload->>'id' FROM records "
                "WHERE entity = 'repositories'"
            )
        }
    private: dict[str, Any] = {}
    for number, (key, entry) in enumerate(sorted(repositories.items()), start=1):
        provider = entry["provider"]
        label = policy.field(REPOSITORY, key)
        if label is None:
            label = f"{provider}:{ids.get((provider, key)) or f'unresolved-{number}'}"
        error = entry["error"]
        if error:
            error = {"code": error["code"], "message": WITHHELD}
        private[label] = {**entry, "error": error}
    return private


def original_repository_keys(db: Database, keys: list[Any]) -> list[Any]:
    """Map the repository keys MHQ sends back (in ``resync``) to the stored keys.

    MHQ identifies a repository by what its record's key was sent as: a pseudonym, a
    key with pseudonyms inside, or a heartbeat's ``<provider>:<id>`` label.
    """
    texts = [key for key in keys if isinstance(key, str)]
    found = sorted({p for key in texts for p in _PSEUDONYM.findall(key)})
    originals: dict[str, str] = {}
    if found:
        originals = dict(
            db.fetch_all(
                "SELECT pseudonym, original FROM pseudonyms WHERE pseudonym = ANY(%s)",
                (found,),
            )
        )
    labels = {
        f"{provider}:{repository_id}": key
        for provider, key, repository_id in db.fetch_all(
            "SELECT provider, repository_key, payload->>'id' FROM records "
            "WHERE entity = 'repositories' AND repository_key IS NOT NULL"
        )
    }
    mapped: list[Any] = []
    for key in keys:
        if isinstance(key, str):
            key = labels.get(key) or _PSEUDONYM.sub(
                lambda match: originals.get(match.group(), match.group()), key
            )
        mapped.append(key)
    return mapped


_PSEUDONYM = re.compile(rf"{PREFIX}[0-9a-f]{{{HEX_DIGITS}}}")


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
    client = MhqClient(settings, AuditLog(db, required=False))
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
        response = client.post(
            client.heartbeat_url, message_id, plaintext, MessageInfo("agent.heartbeat")
        )
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
        if isinstance(parameters, dict) and isinstance(
            parameters.get("repositories"), list
        ):
            parameters = {
                **parameters,
                "repositories": original_repository_keys(
                    db, parameters["repositories"]
                ),
            }
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
