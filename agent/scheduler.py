"""``mhq-agent run``: the long-running scheduler.

Jobs fire on their cron schedules in the configured time zone. A job never overlaps
itself: fires that come while it runs are coalesced into one run after it. A fetch
that is overdue after downtime runs at start. A Postgres advisory lock keeps a
second agent on the same database idle. On SIGTERM or SIGINT the current page is
finished and committed, and the process exits within 10 seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from agent.config.settings import Settings
from agent.errors import AgentError, ConfigError
from agent.jobs import (
    AGENT_LOCK,
    JobBusyError,
    Runtime,
    require_settings,
    run_commands,
    run_fetch,
    run_heartbeat,
    run_push,
)
from agent.schedule import JOBS, next_fire, previous_fire, schedule_of
from agent.store.db import Database
from agent.store.state import StateStore

log = logging.getLogger(__name__)

ALIVE_FILE = Path("/tmp/mhq-agent.alive")  # noqa: S108 - read by the container health check
TICK_S = 15.0
# After SIGTERM, jobs get this long to commit their page before requests are aborted.
GRACE_S = 6.0
EXIT_WITHIN_S = 9.0


class Scheduler:
    def __init__(
        self,
        load_settings: Callable[[], Settings],
        database_url: str,
        *,
        stop: threading.Event | None = None,
        alive_file: Path = ALIVE_FILE,
        runner: Callable[[str, str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``runner(job, trigger)`` runs one job; by default the real jobs, against
        the database. ``clock`` returns the current time as an aware datetime."""
        self._load_settings = load_settings
        self._runner = runner or self._run_once
        self._clock = clock
        self._database_url = database_url
        self.stop = stop or threading.Event()
        self.abort = threading.Event()
        self._alive_file = alive_file
        self._settings = load_settings()
        self._next: dict[str, datetime] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        # Open problems by job, such as a secret the operator has not stored yet.
        self._problems: dict[str, str] = {}

    def request_stop(self) -> None:
        """Ask jobs to finish their page, and abort open requests after a grace time."""
        if self.stop.is_set():
            return
        log.info("shutdown requested")
        self.stop.set()
        timer = threading.Timer(GRACE_S, self.abort.set)
        timer.daemon = True
        timer.start()

    def run(self) -> None:
        lock_db = Database(
            self._database_url, stop=self.stop, application_name="mhq-agent-lock"
        )
        try:
            if not self._wait_for_instance_lock(lock_db):
                return
            self._start()
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self._sleep_time())
        finally:
            self._drain()
            lock_db.close()

    def _wait_for_instance_lock(self, lock_db: Database) -> bool:
        announced = False
        while not self.stop.is_set():
            self._touch_alive()
            try:
                rows = lock_db.fetch_all(
                    "SELECT pg_try_advisory_lock(%s)", (AGENT_LOCK,)
                )
            except AgentError as exc:
                log.error("cannot take the agent lock", extra={"error": str(exc)})
                rows = [(False,)]
            if rows[0][0]:
                return True
            if not announced:
                log.warning("another agent has the lock on this database; staying idle")
                announced = True
            self.stop.wait(TICK_S)
        return False

    def plan(self) -> dict[str, datetime]:
        """Compute each job's next fire time from now; return the plan."""
        now = self._clock()
        self._next = {job: self._next_fire(job, now) for job in JOBS}
        return dict(self._next)

    def _start(self) -> None:
        now = self._clock()
        self.plan()
        log.info(
            "scheduler started",
            extra={job: self._next[job].isoformat() for job in JOBS},
        )
        db = Database(self._database_url, stop=self.stop)
        try:
            self._refresh_problems(db)
        finally:
            db.close()
        self._trigger("heartbeat", "start")
        if self._fetch_overdue(now):
            self._trigger("fetch", "overdue")

    def _fetch_overdue(self, now: datetime) -> bool:
        """True when the latest scheduled fetch time passed without a fetch starting."""
        settings = self._settings
        last_due = previous_fire(
            schedule_of(settings, "fetch"), settings.get("schedule.timezone"), now
        )
        db = Database(self._database_url, stop=self.stop)
        try:
            state = StateStore(db)
            state.close_abandoned_runs()
            last = state.last_started("fetch")
        except AgentError as exc:
            log.error("cannot read the last fetch", extra={"error": str(exc)})
            return False
        finally:
            db.close()
        return last is None or last < last_due

    def _next_fire(self, job: str, after: datetime) -> datetime:
        settings = self._settings
        return next_fire(
            schedule_of(settings, job), settings.get("schedule.timezone"), after
        ).astimezone(UTC)

    def tick(self) -> None:
        """Start every job whose fire time has come; one loop of ``run``."""
        self._touch_alive()
        self._reload_settings()
        now = self._clock()
        for job in JOBS:
            if now >= self._next[job]:
                # Computed from now, so fires missed during a long run count once.
                self._next[job] = self._next_fire(job, now)
                self._trigger(job, "schedule")

    def _reload_settings(self) -> None:
        try:
            settings = self._load_settings()
        except ConfigError as exc:
            log.error(
                "configuration invalid, keeping the previous one",
                extra={"error": str(exc)},
            )
            return
        changed = any(
            schedule_of(settings, j) != schedule_of(self._settings, j) for j in JOBS
        ) or settings.get("schedule.timezone") != self._settings.get(
            "schedule.timezone"
        )
        self._settings = settings
        if changed:
            now = self._clock()
            self._next = {job: self._next_fire(job, now) for job in JOBS}
            log.info(
                "schedules changed", extra={j: self._next[j].isoformat() for j in JOBS}
            )

    def _sleep_time(self) -> float:
        now = self._clock()
        soonest = min(self._next.values())
        return max(0.5, min(TICK_S, (soonest - now).total_seconds()))

    def _trigger(self, job: str, trigger: str) -> None:
        with self._lock:
            running = self._threads.get(job)
            if running is not None and running.is_alive():
                if job not in self._pending:
                    log.info(
                        "job still running, next run coalesced", extra={"job": job}
                    )
                self._pending.add(job)
                return
            thread = threading.Thread(
                target=self._run_job,
                args=(job, trigger),
                name=f"job-{job}",
                daemon=True,
            )
            self._threads[job] = thread
            thread.start()

    def _run_job(self, job: str, trigger: str) -> None:
        while True:
            self._runner(job, trigger)
            with self._lock:
                if job not in self._pending or self.stop.is_set():
                    return
                self._pending.discard(job)
            trigger = "coalesced"

    def _run_once(self, job: str, trigger: str) -> None:
        db = Database(self._database_url, stop=self.abort)
        try:
            if not self._settings_ready(job, db):
                return
            runtime = Runtime(
                self._settings, db, self.stop, self.abort, list(self._problems.values())
            )
            if job == "fetch":
                run_fetch(runtime, trigger)
            elif job == "push":
                run_push(runtime, trigger)
            else:
                run_heartbeat(runtime, trigger)
                # New commands, and ones postponed because their job was busy.
                if StateStore(db).open_commands():
                    threading.Thread(
                        target=self._run_commands, name="commands", daemon=True
                    ).start()
        except JobBusyError as exc:
            log.warning("job skipped", extra={"job": job, "reason": str(exc)})
        except AgentError as exc:
            log.error("job failed", extra={"job": job, "error": str(exc)})
        except Exception:
            log.exception("job crashed", extra={"job": job})
        finally:
            db.close()

    def _settings_ready(self, job: str, db: Database) -> bool:
        self._refresh_problems(db)
        problem = self._problems.get(job)
        if problem:
            log.error(
                "job skipped: configuration incomplete",
                extra={"job": job, "error": problem},
            )
        return problem is None

    def _refresh_problems(self, db: Database) -> None:
        """Check every job's settings; store the open problems when they change."""
        problems: dict[str, str] = {}
        for job in JOBS:
            try:
                require_settings(job, self._settings)
            except ConfigError as exc:
                problems[job] = str(exc)
        with self._lock:
            changed = problems != self._problems
            self._problems = problems
        if not changed:
            return
        try:
            StateStore(db).set_problems(sorted(set(problems.values())))
        except AgentError as exc:
            log.error("cannot store problems", extra={"error": str(exc)})

    def _run_commands(self) -> None:
        db = Database(self._database_url, stop=self.abort)
        runtime = Runtime(
            self._settings, db, self.stop, self.abort, list(self._problems.values())
        )
        try:
            run_commands(runtime)
        except AgentError as exc:
            log.error("commands failed", extra={"error": str(exc)})
        finally:
            db.close()

    def join(self, timeout: float) -> None:
        """Wait for running jobs, including coalesced reruns, up to ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _drain(self) -> None:
        deadline = time.monotonic() + EXIT_WITHIN_S
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        still = [t.name for t in self._threads.values() if t.is_alive()]
        if still:
            log.warning(
                "exiting with jobs unfinished; their last page was not committed",
                extra={"jobs": still},
            )
        log.info("scheduler stopped")

    def _touch_alive(self) -> None:
        try:
            self._alive_file.touch()
        except OSError as exc:
            log.debug("cannot touch the liveness file", extra={"error": str(exc)})
