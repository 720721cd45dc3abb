"""Cron schedules of the three jobs, evaluated in the configured time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from agent.config.settings import Settings

JOBS = ("fetch", "push", "heartbeat")
# The largest DST shift in use is one hour; 200 steps cover two hours of a
# once-a-minute schedule on either side of it.
_DST_SHIFT = timedelta(hours=1)
_MAX_STEPS = 200


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """Return the first fire time strictly after ``after``, aware, in ``timezone``.

    Cron fields match wall-clock time in ``timezone``, with the usual cron rules
    around DST. A wall time skipped when clocks go forward (02:30 on a 02:00 to
    03:00 night) fires one hour later, at 03:30. When clocks go back, a schedule
    with a fixed hour fires in the first pass of the repeated hour only, while one
    whose hour field is ``*`` (every few minutes) fires in both passes. croniter 7's
    own time zone handling fires the repeated hour of a daily job twice and then
    returns the same time forever, so croniter gets naive wall-clock times here and
    zoneinfo applies the offsets.
    """
    zone = ZoneInfo(timezone)
    instant = after.astimezone(UTC)
    folds = (0, 1) if _every_hour(expression) else (0,)
    # Start one DST shift back: the second pass of a repeated hour has earlier walls.
    walls = croniter(expression, _wall(instant, zone) - _DST_SHIFT)
    best: datetime | None = None
    best_wall = datetime.max - _DST_SHIFT
    for _ in range(_MAX_STEPS):
        wall: datetime = walls.get_next(datetime)
        if wall > best_wall + _DST_SHIFT:
            break
        for fold in folds:
            candidate = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if candidate > instant and (best is None or candidate < best):
                best, best_wall = candidate, wall
    if best is None:
        raise ValueError(f"cron expression {expression!r} never fires after {after}")
    return best.astimezone(zone)


def previous_fire(expression: str, timezone: str, before: datetime) -> datetime:
    """Return the last fire time at or before ``before``, by next_fire's rules."""
    zone = ZoneInfo(timezone)
    instant = before.astimezone(UTC)
    folds = (0, 1) if _every_hour(expression) else (0,)
    walls = croniter(
        expression, _wall(instant, zone) + _DST_SHIFT + timedelta(seconds=1)
    )
    best: datetime | None = None
    best_wall = datetime.min + _DST_SHIFT
    for _ in range(_MAX_STEPS):
        wall: datetime = walls.get_prev(datetime)
        if wall < best_wall - _DST_SHIFT:
            break
        for fold in folds:
            candidate = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if candidate <= instant and (best is None or candidate > best):
                best, best_wall = candidate, wall
    if best is None:
        raise ValueError(f"cron expression {expression!r} never fired before {before}")
    return best.astimezone(zone)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _every_hour(expression: str) -> bool:
    return expression.split()[1].startswith("*")


def schedule_of(settings: Settings, job: str) -> str:
    return str(settings.get(f"schedule.{job}"))


def next_run(settings: Settings, job: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return next_fire(schedule_of(settings, job), settings.get("schedule.timezone"), now)
