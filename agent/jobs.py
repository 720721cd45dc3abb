"""The agent's jobs (fetch, push, heartbeat) and the commands MHQ can send.

Each job runs once per call, records a job run, and holds a Postgres advisory lock
so the same job never runs twice at once, even from two processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from agent.config.settings import Settings
from agent.errors import AgentError, ConfigError, ProviderError, StoreError
from agent.heartbeat import HeartbeatResult, send_heartbeat
from agent.logs import mask
from agent.providers import REGISTRY
from agent.providers.base import Provider, RepositoryRef, ResolveFailure
from agent.providers.http import Interrupted
from agent.push.delivery import push
from agent.store.db import Database
from agent.store.outbox import Outbox
from agent.store.records import RecordStore
from agent.store.retention import prune
from agent.store.state import StateStore

log = logging.getLogger(__name__)

# Advisory lock keys: the scheduler's instance lock and one per job.
AGENT_LOCK = 4_172_000
JOB_LOCKS = {"fetch": 4_172_010, "push": 4_172_011, "heartbeat": 4_172_012}


class JobBusyError(AgentError):
    """The job is already running in this or another agent process."""


@dataclass
class Runtime:
    """The settings, database handle and shutdown signals a job runs with."""

    settings: Settings
    db: Database
    stop: threading.Event
    abort: threading.Event
    problems: list[str] = field(default_factory=list)


@dataclass
class FetchResult:
    ok: bool = True
    repositories: int = 0
    failed: list[str] = field(default_factory=list)
    records_changed: int = 0
    records_deleted: int = 0
    pages: int = 0
    requests: int = 0
    interrupted: bool = False
    record_failures: int = 0


# Exceptions a mapping raises on a value of an unexpected type or shape.
MAPPING_ERRORS = (ValueError, TypeError, AttributeError, LookupError)

MHQ_KEYS = ("mhq.webhook_url", "mhq.client_id", "mhq.client_secret", "mhq.public_key")


def require_settings(job: str, settings: Settings) -> None:
    """Raise ConfigError naming the first setting ``job`` needs and does not have."""
    if job != "fetch":
        settings.require(*MHQ_KEYS)
        return
    bitbucket = settings.bitbucket
    workspace_only = bool(bitbucket.workspace_name and bitbucket.access_token)
    if not (settings.gitlab.repositories or bitbucket.repositories or workspace_only):
        raise ConfigError(
            "integrations.gitlab.repositories",
            "no source",
            "no repositories are configured; list GitLab project or group URLs under "
            "integrations.gitlab.repositories, or Bitbucket repository or workspace "
            "URLs under integrations.bitbucket.repositories (config.json or SSM)",
        )
    if settings.gitlab.repositories:
        settings.require("integrations.gitlab.access_token")
    if bitbucket.repositories:
        settings.require("integrations.bitbucket.access_token")


@contextmanager
def job_lock(db: Database, job: str) -> Iterator[None]:
    """Hold the job's advisory lock on a connection of its own for the job's length.

    NOTE: a Postgres restart ends that connection and releases the lock unnoticed,
    so for the rest of the run a second agent on the same database could start the
    same job.
    """
    lock_db = Database(db.url, application_name=f"mhq-agent-{job}-lock")
    try:
        rows = lock_db.fetch_all("SELECT pg_try_advisory_lock(%s)", (JOB_LOCKS[job],))
        if not rows[0][0]:
            raise JobBusyError(f"{job} is already running in another agent process")
        # With the lock held, a run of this job still marked running was left by a
        # process that died (SIGKILL, power loss).
        abandoned = StateStore(db).close_abandoned_runs(job)
        if abandoned:
            log.warning(
                "closed runs left by a stopped process",
                extra={"job": job, "runs": abandoned},
            )
        yield
    finally:
        lock_db.close()


@contextmanager
def recorded_run(state: StateStore, job: str, trigger: str) -> Iterator[dict[str, Any]]:
    run_id = state.start_run(job, trigger)
    summary: dict[str, Any] = {}
    started = time.monotonic()
    log.info("job started", extra={"job": job, "trigger": trigger, "run_id": run_id})
    try:
        yield summary
    except Interrupted:
        state.finish_run(run_id, "interrupted", summary)
        log.warning("job interrupted", extra={"job": job, "run_id": run_id})
        raise
    except BaseException as exc:
        summary["error"] = mask(str(exc))
        _finish_quietly(state, run_id, "failed", summary)
        raise
    status = "ok" if summary.get("ok", True) else "failed"
    if summary.get("interrupted"):
        status = "interrupted"
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    state.finish_run(run_id, status, summary)
    log.info(
        "job interrupted" if status == "interrupted" else "job finished",
        extra={"job": job, "run_id": run_id, "status": status, **_brief(summary)},
    )


def _finish_quietly(
    state: StateStore, run_id: int, status: str, summary: dict[str, Any]
) -> None:
    try:
        state.finish_run(run_id, status, summary)
    except StoreError as exc:
        log.error("cannot record job run", extra={"run_id": run_id, "error": str(exc)})


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not isinstance(v, list | dict)}


def run_fetch(runtime: Runtime, trigger: str = "manual") -> FetchResult:
    state = StateStore(runtime.db)
    with (
        job_lock(runtime.db, "fetch"),
        recorded_run(state, "fetch", trigger) as summary,
    ):
        result = _fetch_all(runtime)
        summary.update(vars(result))
        summary["ok"] = result.ok
    return result


def _fetch_all(runtime: Runtime) -> FetchResult:
    result = FetchResult()
    store = RecordStore(runtime.db)
    for name, factory in REGISTRY.items():
        try:
            provider = factory(runtime.settings, runtime.abort)
        except ProviderError as exc:
            log.error(
                "provider not started", extra={"provider": name, "error": str(exc)}
            )
            runtime.problems.append(str(exc))
            result.ok = False
            continue
        if provider is None:
            continue
        try:
            _fetch_provider(runtime, provider, store, result)
        finally:
            result.requests += provider.request_count
            provider.close()
        if result.interrupted:
            break
    return result


def _fetch_provider(
    runtime: Runtime, provider: Provider, store: RecordStore, result: FetchResult
) -> None:
    """Fetch the provider's repositories, up to ``http.max_concurrency`` at once.

    A repository with few requests in flight (a chain of pages, a page being
    stored) leaves the host's request slots to the others. Each repository runs in
    a worker thread with a database connection of its own and commits its pages
    in order, each with its bookmark.
    """
    workers = max(1, int(runtime.settings.get("http.max_concurrency") or 1))
    futures: list[Future[FetchResult]] = []
    pool = ThreadPoolExecutor(workers, thread_name_prefix=f"fetch-{provider.name}")
    try:
        for entry in provider.resolve():
            if runtime.stop.is_set():
                result.interrupted = True
                break
            if isinstance(entry, ResolveFailure):
                _record_resolve_failure(store, provider, entry, result)
                continue
            result.repositories += 1
            futures.append(
                pool.submit(_fetch_repository_alone, runtime, provider, entry)
            )
            if not _wait_for_free_worker(futures, workers):
                break
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for future in futures:
        _add_result(result, future.result())


def _wait_for_free_worker(futures: list[Future[FetchResult]], workers: int) -> bool:
    """Block until fewer than ``workers`` repositories are queued or running.

    Returns False when a repository stopped the fetch: it was interrupted or
    raised, as a lost database would.
    """
    while True:
        running = [future for future in futures if not future.done()]
        for future in futures:
            if future.done() and (
                future.exception() is not None or future.result().interrupted
            ):
                return False
        if len(running) < workers:
            return True
        wait(running, return_when=FIRST_COMPLETED)


def _fetch_repository_alone(
    runtime: Runtime, provider: Provider, repository: RepositoryRef
) -> FetchResult:
    """Fetch one repository in a worker thread, on a database connection of its own."""
    part = FetchResult()
    db = Database(runtime.db.url, stop=runtime.abort, application_name="mhq-agent")
    try:
        _fetch_repository(runtime, provider, repository, RecordStore(db), part)
    finally:
        db.close()
    return part


def _add_result(result: FetchResult, part: FetchResult) -> None:
    result.ok = result.ok and part.ok
    result.failed.extend(part.failed)
    result.records_changed += part.records_changed
    result.records_deleted += part.records_deleted
    result.pages += part.pages
    result.record_failures += part.record_failures
    result.interrupted = result.interrupted or part.interrupted


def _record_resolve_failure(
    store: RecordStore, provider: Provider, failure: ResolveFailure, result: FetchResult
) -> None:
    code = getattr(failure.error, "code", "error")
    log.error(
        "repository not resolved",
        extra={
            "provider": provider.name,
            "repository": failure.entry,
            "error": str(failure.error),
        },
    )
    store.record_outcome(
        provider.name,
        failure.entry,
        status="failed",
        error_code=code,
        error_message=str(failure.error),
    )
    result.ok = False
    result.failed.append(failure.entry)


def _fetch_repository(
    runtime: Runtime,
    provider: Provider,
    repository: RepositoryRef,
    store: RecordStore,
    result: FetchResult,
) -> None:
    errors: list[tuple[str, str]] = []
    state = store.view(provider.name, repository.key)
    log.info(
        "repository fetch started",
        extra={"provider": provider.name, "repository": repository.key},
    )
    for stream in provider.streams:
        try:
            _fetch_stream(runtime, provider, repository, stream, state, store, result)
        except Interrupted:
            result.interrupted = True
            break
        except ProviderError as exc:
            errors.append((exc.code, f"{stream}: {exc}"))
            log.error(
                "stream fetch failed",
                extra={
                    "provider": provider.name,
                    "repository": repository.key,
                    "stream": stream,
                    "error": str(exc),
                },
            )
        except MAPPING_ERRORS as exc:
            # Data the provider's mapping did not expect, outside its per-record
            # guards: this stream fails, the other streams and repositories go on.
            errors.append(("invalid_data", f"{stream}: {type(exc).__name__}: {exc}"))
            log.error(
                "stream fetch failed on unexpected data",
                exc_info=True,
                extra={
                    "provider": provider.name,
                    "repository": repository.key,
                    "stream": stream,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
        if runtime.stop.is_set():
            result.interrupted = True
            break
    _record_repository_outcome(store, provider, repository, errors, result)


def _fetch_stream(
    runtime: Runtime,
    provider: Provider,
    repository: RepositoryRef,
    stream: str,
    state: Any,
    store: RecordStore,
    result: FetchResult,
) -> None:
    items = 0
    for pages, page in enumerate(provider.fetch(repository, stream, state), start=1):
        outcome = store.apply_page(provider.name, repository.key, page)
        items += page.items
        result.pages += 1
        result.records_changed += outcome.changed
        result.records_deleted += outcome.deleted
        failures = page.failures + outcome.failures
        result.record_failures += len(failures)
        for failure in failures:
            log.error(
                "record skipped",
                extra={
                    "provider": provider.name,
                    "repository": repository.key,
                    "entity": failure.entity,
                    "record_id": failure.raw_id,
                    "error": failure.reason,
                },
            )
        log.info(
            "fetch progress",
            extra={
                "provider": provider.name,
                "repository": repository.key,
                "stream": stream,
                "pages": pages,
                "items": items,
                "changed": outcome.changed,
            },
        )
        if runtime.stop.is_set():
            raise Interrupted("shutdown requested; stopped after a committed page")


def _record_repository_outcome(
    store: RecordStore,
    provider: Provider,
    repository: RepositoryRef,
    errors: list[tuple[str, str]],
    result: FetchResult,
) -> None:
    if result.interrupted and not errors:
        return
    if errors:
        result.ok = False
        result.failed.append(repository.key)
        status = "failed" if len(errors) == len(provider.streams) else "partial"
        code = errors[0][0]
        store.record_outcome(
            provider.name,
            repository.key,
            status=status,
            error_code=code,
            error_message="; ".join(m for _, m in errors),
        )
        return
    store.record_outcome(provider.name, repository.key, status="ok")


def run_push(
    runtime: Runtime, trigger: str = "manual", *, retry_rejected: bool = False
) -> bool:
    state = StateStore(runtime.db)
    with job_lock(runtime.db, "push"), recorded_run(state, "push", trigger) as summary:
        agent_id = state.agent_id(runtime.settings.get("mhq.agent_id"))
        result = push(
            runtime.settings,
            Outbox(runtime.db),
            agent_id=agent_id,
            stop=runtime.stop,
            retry_rejected=retry_rejected,
        )
        summary.update(vars(result))
        summary["ok"] = not result.errors
        summary.update(_prune(runtime))
    return not result.errors


def _prune(runtime: Runtime) -> dict[str, int]:
    """Apply the retention periods; a failure is logged and does not fail the push."""
    try:
        pruned = prune(
            runtime.db,
            delivered_days=runtime.settings.get("retention.delivered_days"),
            job_runs_days=runtime.settings.get("retention.job_runs_days"),
        )
    except StoreError as exc:
        log.error("pruning failed", extra={"error": str(exc)})
        return {}
    return {"pruned_batches": pruned.batches, "pruned_job_runs": pruned.job_runs}


def run_heartbeat(runtime: Runtime, trigger: str = "manual") -> HeartbeatResult:
    """Send a heartbeat; its result contains the new commands MHQ sent back."""
    state = StateStore(runtime.db)
    agent_id = state.agent_id(runtime.settings.get("mhq.agent_id"))
    with recorded_run(state, "heartbeat", trigger) as summary:
        result = send_heartbeat(
            runtime.settings, runtime.db, agent_id, runtime.problems
        )
        summary.update(
            {
                "status": result.status,
                "error": result.error,
                "commands": len(result.commands),
                "ok": result.error is None,
            }
        )
    return result


def run_commands(runtime: Runtime) -> None:
    """Execute every received command once, recording each result."""
    state = StateStore(runtime.db)
    for command_id, name, parameters in state.open_commands():
        if not state.claim_command(command_id):
            continue
        log.info("command started", extra={"command_id": command_id, "command": name})
        try:
            outcome = _execute(runtime, name, parameters or {})
        except JobBusyError as exc:
            state.release_command(command_id)
            log.warning(
                "command postponed",
                extra={"command_id": command_id, "reason": str(exc)},
            )
            continue
        except (AgentError, ValueError) as exc:
            state.finish_command(command_id, "failed", {"error": mask(str(exc))})
            log.error(
                "command failed", extra={"command_id": command_id, "error": str(exc)}
            )
            continue
        state.finish_command(
            command_id, "ok" if outcome.get("ok") else "failed", outcome
        )
        log.info(
            "command finished", extra={"command_id": command_id, **_brief(outcome)}
        )


def _execute(runtime: Runtime, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    if name == "resync":
        repositories = parameters.get("repositories")
        since = parameters.get("since")
        if repositories is not None and not isinstance(repositories, list):
            raise ValueError("resync parameter 'repositories' must be a list of keys")
        if since is not None:
            from agent.processing.records import utc_timestamp

            since = utc_timestamp(since)
        outcome["records_to_resend"] = RecordStore(runtime.db).reset_for_resync(
            None, repositories, since
        )
    fetched = run_fetch(runtime, trigger=f"command:{name}")
    pushed = run_push(runtime, trigger=f"command:{name}")
    outcome.update(
        {
            "ok": fetched.ok and pushed,
            "fetch_ok": fetched.ok,
            "push_ok": pushed,
            "records_changed": fetched.records_changed,
        }
    )
    return outcome
