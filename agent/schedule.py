"""Cron schedules of the three jobs, evaluated in the configured time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from agent.config.settings import Settings

JOBS = ("fetch", "push", "heartbeat")


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """Return the first fire time strictly after ``after``, as an aware datetime.

    croniter works in wall-clock time of ``timezone``, so "0 2 * * *" fires at 02:00
    local time on both sides of a DST change (and once, not twice, in the repeated
    hour).
    """
    local = after.astimezone(ZoneInfo(timezone))
    fire: datetime = croniter(expression, local).get_next(datetime)
    return fire


def previous_fire(expression: str, timezone: str, before: datetime) -> datetime:
    local = before.astimezone(ZoneInfo(timezone))
    fire: datetime = croniter(expression, local).get_prev(datetime)
    return fire


def schedule_of(settings: Settings, job: str) -> str:
    return str(settings.get(f"schedule.{job}"))


def next_run(settings: Settings, job: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(ZoneInfo("UTC"))
    return next_fire(schedule_of(settings, job), settings.get("schedule.timezone"), now)
