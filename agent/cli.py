"""Command line: ``mhq-agent <command>`` (also ``python -m agent``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from agent import __version__, logs
from agent.config.settings import LoadOptions, Settings, load_settings
from agent.errors import AgentError, ConfigError
from agent.jobs import (
    JobBusyError,
    Runtime,
    require_settings,
    run_commands,
    run_fetch,
    run_heartbeat,
    run_push,
)
from agent.scheduler import EXIT_WITHIN_S, GRACE_S, Scheduler
from agent.store.db import Database
from agent.store.migrate import migrate

log = logging.getLogger("agent")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _common_flags(default: object) -> argparse.ArgumentParser:
    """Flags accepted before and after the command; ``default`` keeps either from
    overwriting the other."""
    common = argparse.ArgumentParser(add_help=False, argument_default=default)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="JSON config file (default: $MHQ_CONFIG, else ./config.json if present)",
    )
    common.add_argument(
        "--ssm-prefix",
        metavar="PATH",
        help="read settings from SSM parameters under this path, e.g. /mhq-agent",
    )
    common.add_argument(
        "--database-url",
        metavar="URL",
        help="Postgres connection URL (overrides DATABASE_URL)",
    )
    common.add_argument(
        "--log-format",
        choices=("json", "text"),
        help="log format (default: text on a terminal, json otherwise)",
    )
    common.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="minimum level logged (default INFO)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_flags(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="mhq-agent",
        description=(
            "Sync merge requests, pipelines and deployments from your code hosts "
            "to MiddlewareHQ."
        ),
        parents=[_common_flags(None)],
    )
    parser.add_argument(
        "--version", action="version", version=f"mhq-sync-agent {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run",
        parents=[common],
        help="run the scheduler: fetch, push and heartbeat on their cron schedules",
    )
    commands.add_parser(
        "sync", parents=[common], help="one fetch followed by one push, now"
    )
    commands.add_parser(
        "fetch",
        parents=[common],
        help="fetch changes from every configured repository, now",
    )
    push_parser = commands.add_parser(
        "push", parents=[common], help="deliver unsent records to MHQ, now"
    )
    push_parser.add_argument(
        "--retry-rejected",
        action="store_true",
        help="also resend batches MHQ rejected with 400 or 422",
    )
    commands.add_parser(
        "heartbeat",
        parents=[common],
        help="send one heartbeat and run the commands MHQ returns",
    )
    status_parser = commands.add_parser(
        "status", parents=[common], help="show repositories, jobs and the backlog"
    )
    status_parser.add_argument(
        "--json", action="store_true", help="print JSON instead of tables"
    )
    commands.add_parser("migrate", parents=[common], help="apply database migrations")
    commands.add_parser(
        "check",
        parents=[common],
        help="check the configuration, the database, each code host and MHQ, "
        "without storing or sending data",
    )
    _add_inspection_commands(commands, common)
    return parser


def _add_inspection_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``preview`` and ``audit``, which show what leaves the agent."""
    preview_parser = commands.add_parser(
        "preview",
        parents=[common],
        help="print the records the next push would send, after the privacy "
        "policy, without sending or queueing anything",
    )
    preview_parser.add_argument(
        "--json", action="store_true", help="print one JSON object per record"
    )
    audit_parser = commands.add_parser(
        "audit",
        parents=[common],
        help="list every request that carried a message to MHQ, with SHA-256 "
        "hashes of its plaintext and ciphertext",
    )
    audit_parser.add_argument(
        "--json", action="store_true", help="print one JSON object per attempt"
    )
    audit_parser.add_argument(
        "--type", choices=("sync.batch", "agent.heartbeat"), help="only this type"
    )
    audit_parser.add_argument(
        "--since",
        metavar="TIME",
        type=_timestamp,
        help="only attempts sent at or after TIME, in RFC 3339 (2026-01-02T03:04:05Z)",
    )
    audit_parser.add_argument(
        "--status",
        type=int,
        help="only attempts MHQ responded to with this HTTP status; 0 for none",
    )
    audit_parser.add_argument(
        "--id", metavar="MESSAGE_ID", help="only attempts of this message (webhook-id)"
    )
    audit_parser.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="show the newest N matching attempts (default 1000)",
    )
    audit_parser.add_argument(
        "--pseudonym",
        metavar="PSEUDONYM",
        help="print what a pseudonym sent to MHQ stands for, instead of the log",
    )


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2026-01-02T03:04:05Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = LoadOptions(
        config_path=args.config,
        ssm_prefix=args.ssm_prefix,
        flags={
            "database_url": args.database_url,
            "log.format": args.log_format,
            "log.level": args.log_level,
        },
    )
    try:
        settings = load_settings(options)
        _require_for(args.command, settings)
    except ConfigError as exc:
        logs.configure(args.log_format, args.log_level)
        log.error(
            "configuration invalid",
            extra={"key": exc.key, "source": exc.source, "problem": exc.problem},
        )
        print(f"mhq-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.masker.register(settings.secrets)
    logs.configure(settings.get("log.format"), settings.get("log.level"))
    for warning in settings.warnings:
        log.warning(warning)
    handler = HANDLERS[args.command]
    try:
        return handler(args, settings, lambda: load_settings(options))
    except JobBusyError as exc:
        log.error("job busy", extra={"error": str(exc)})
        return EXIT_FAILED
    except AgentError as exc:
        log.error("command failed", extra={"command": args.command, "error": str(exc)})
        print(f"mhq-agent: {logs.mask(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        # Logged through the masking formatter: Python's default handler would
        # print the traceback, and any secret in it, unmasked.
        log.exception("command crashed", extra={"command": args.command})
        return EXIT_FAILED


def _require_for(command: str, settings: Settings) -> None:
    """Check, before any network call, that the command has what it needs.

    ``run`` needs only the database: a job whose settings are missing (secrets the
    operator has not stored yet) is skipped and reported until they appear.
    ``check`` reports missing settings itself, as lines of its report.
    """
    if command == "check":
        return
    settings.require("database_url")
    jobs = {"sync": ("fetch", "push"), "fetch": ("fetch",), "push": ("push",)}
    for job in jobs.get(command, ("heartbeat",) if command == "heartbeat" else ()):
        require_settings(job, settings)


def _runtime(settings: Settings) -> Runtime:
    stop, abort = threading.Event(), threading.Event()
    _install_signal_handlers(lambda: _stop_with_grace(stop, abort))
    db = Database(settings.get("database_url"), stop=abort)
    migrate(db)
    return Runtime(settings, db, stop, abort)


def _stop_with_grace(stop: threading.Event, abort: threading.Event) -> None:
    if not stop.is_set():
        log.info("shutdown requested; finishing the current page")
        stop.set()
        for delay, action in ((GRACE_S, abort.set), (EXIT_WITHIN_S, _exit_now)):
            timer = threading.Timer(delay, action)
            timer.daemon = True
            timer.start()


def _exit_now(status: int = EXIT_FAILED) -> None:
    """End the process while a request still blocks after the shutdown grace time.

    A request in flight cannot be cancelled, and its timeout may be far longer
    than the 10 seconds a shutdown may take. Postgres rolls back the open
    transaction, so only the uncommitted page is lost and fetched again next run.
    """
    log.warning(
        "still busy after shutdown was requested; exiting without the current page",
        extra={"after_s": EXIT_WITHIN_S},
    )
    logging.shutdown()
    sys.stdout.flush()
    os._exit(status)


def _install_signal_handlers(callback: Callable[[], None]) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        callback()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def cmd_run(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    db = Database(settings.get("database_url"))
    migrate(db)
    db.close()
    scheduler = Scheduler(reload, settings.get("database_url"))
    _install_signal_handlers(scheduler.request_stop)
    scheduler.run()
    # The scheduler stopped waiting for its jobs. A worker still blocked on a
    # request would hold the interpreter open until the request times out, as
    # Python joins thread pool workers at exit, daemon threads included.
    if _busy_threads():
        _exit_now(EXIT_OK)
    return EXIT_OK


def _busy_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and not isinstance(t, threading.Timer)
        and t.is_alive()
    ]


def cmd_sync(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    runtime = _runtime(settings)
    fetched = run_fetch(runtime)
    if runtime.stop.is_set():
        return EXIT_FAILED
    pushed = run_push(runtime)
    return EXIT_OK if fetched.ok and pushed and not fetched.interrupted else EXIT_FAILED


def cmd_fetch(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    result = run_fetch(_runtime(settings))
    return EXIT_OK if result.ok and not result.interrupted else EXIT_FAILED


def cmd_push(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    ok = run_push(_runtime(settings), retry_rejected=args.retry_rejected)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_heartbeat(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    runtime = _runtime(settings)
    result = run_heartbeat(runtime)
    if result.commands:
        run_commands(runtime)
    return EXIT_OK if result.error is None else EXIT_FAILED


def cmd_status(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    from agent.status import collect_status, render_status

    db = Database(settings.get("database_url"), reconnect_budget_s=5)
    try:
        migrate(db)
    except AgentError as exc:
        log.error("cannot migrate the database", extra={"error": str(exc)})
    report = collect_status(settings, db)
    print(render_status(report, as_json=args.json))
    return EXIT_OK


def cmd_migrate(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    applied = migrate(Database(settings.get("database_url")))
    print(
        f"applied {len(applied)} migration(s)"
        + (f": {', '.join(applied)}" if applied else "")
    )
    return EXIT_OK


def cmd_check(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    from agent.check import render, run_checks

    results, status = run_checks(settings)
    print(render(results))
    return status


def cmd_preview(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    from agent.processing.privacy import PolicySettings
    from agent.push.audit import print_preview
    from agent.store.outbox import Outbox

    db = Database(settings.get("database_url"))
    migrate(db)
    privacy = PolicySettings.from_values(settings.get)
    print_preview(Outbox(db), privacy, as_json=args.json, write=print)
    return EXIT_OK


def cmd_audit(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings]
) -> int:
    import json

    from agent.push.audit import AuditFilter, list_entries, lookup_pseudonym, render

    db = Database(settings.get("database_url"))
    migrate(db)
    if args.pseudonym:
        found = lookup_pseudonym(db, args.pseudonym)
        if found is None:
            print(f"mhq-agent: pseudonym {args.pseudonym!r} not found", file=sys.stderr)
            return EXIT_FAILED
        print(
            json.dumps(found) if args.json else f"{found['kind']}: {found['original']}"
        )
        return EXIT_OK
    where = AuditFilter(args.type, args.since, args.status, args.id, args.limit)
    print(render(list_entries(db, where), as_json=args.json))
    return EXIT_OK


HANDLERS: dict[
    str, Callable[[argparse.Namespace, Settings, Callable[[], Settings]], int]
] = {
    "run": cmd_run,
    "sync": cmd_sync,
    "fetch": cmd_fetch,
    "push": cmd_push,
    "heartbeat": cmd_heartbeat,
    "status": cmd_status,
    "migrate": cmd_migrate,
    "check": cmd_check,
    "preview": cmd_preview,
    "audit": cmd_audit,
}
