"""Cron fire times in a time zone, across the spring-forward and fall-back nights.

The DST nights used: Europe/Berlin 2025-03-30 (02:00 jumps to 03:00) and 2025-10-26
(03:00 falls back to 02:00). America/New_York 2025-03-09 (02:00 jumps to 03:00) and
2025-11-02 (02:00 falls back to 01:00).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config.settings import LoadOptions, load_settings
from agent.schedule import next_fire, next_run

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def local(zone: str, day: date, at: time = time(0)) -> datetime:
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone))


def fires(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Return every fire time after ``start`` up to and including ``end``."""
    result: list[datetime] = []
    moment = next_fire(expression, zone, start)
    while moment <= end:
        result.append(moment)
        moment = next_fire(expression, zone, moment)
    return result


def in_utc(moments: list[datetime]) -> list[datetime]:
    return [moment.astimezone(UTC) for moment in moments]


# -- basic guarantees ----------------------------------------------------------------

CASES = [
    pytest.param(
        "30 2 * * *", BERLIN, datetime(2025, 3, 29, 12, tzinfo=UTC), id="be-spring"
    ),
    pytest.param(
        "30 2 * * *", BERLIN, datetime(2025, 10, 26, 0, 30, tzinfo=UTC), id="be-fall"
    ),
    pytest.param(
        "0 */6 * * *", NEW_YORK, datetime(2025, 3, 9, 5, tzinfo=UTC), id="ny-spring"
    ),
    pytest.param(
        "*/5 * * * *", NEW_YORK, datetime(2025, 11, 2, 5, 58, tzinfo=UTC), id="ny-fall"
    ),
    pytest.param(
        "*/5 * * * *", "UTC", datetime(2025, 1, 1, 12, 0, tzinfo=UTC), id="utc"
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after"), CASES)
def test_fire_is_aware(expression: str, zone: str, after: datetime) -> None:
    fire = next_fire(expression, zone, after)

    assert fire.tzinfo is not None
    assert fire.utcoffset() is not None


@pytest.mark.parametrize(("expression", "zone", "after"), CASES)
def test_fire_strictly_after(expression: str, zone: str, after: datetime) -> None:
    assert next_fire(expression, zone, after) > after


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(datetime(2025, 1, 1, 12, 0, tzinfo=UTC), id="on-fire-time"),
        pytest.param(
            datetime(2025, 1, 1, 12, 4, 59, 500000, tzinfo=UTC), id="just-before"
        ),
        pytest.param(datetime(2025, 1, 1, 12, 0, 0, 1, tzinfo=UTC), id="just-after"),
    ],
)
def test_next_after_fire_time(after: datetime) -> None:
    fire = next_fire("*/5 * * * *", "UTC", after)

    assert fire == datetime(2025, 1, 1, 12, 5, tzinfo=UTC)


def test_after_in_other_zone() -> None:
    after = datetime(2025, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))

    fire = next_fire("0 */6 * * *", "UTC", after)

    assert fire == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)


def test_default_zone_is_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(LoadOptions(environ={}))
    now = datetime(2025, 3, 30, 7, 0, tzinfo=UTC)

    assert settings.get("schedule.timezone") == "UTC"
    assert next_run(settings, "fetch", now) == datetime(2025, 3, 30, 12, 0, tzinfo=UTC)
    assert next_run(settings, "push", now) == datetime(2025, 3, 30, 12, 30, tzinfo=UTC)
    assert next_run(settings, "heartbeat", now) == datetime(
        2025, 3, 30, 7, 5, tzinfo=UTC
    )
    assert next_run(settings, "fetch", now).utcoffset() == timedelta(0)


def test_configured_zone_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {"SCHEDULE_TIMEZONE": BERLIN, "FETCH_SCHEDULE": "30 2 * * *"}
    settings = load_settings(LoadOptions(environ=environ))

    fire = next_run(settings, "fetch", datetime(2025, 6, 1, 12, tzinfo=UTC))

    assert fire == datetime(2025, 6, 2, 0, 30, tzinfo=UTC)


# -- a daily job on the DST nights ---------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "day"),
    [
        pytest.param("30 2 * * *", BERLIN, date(2025, 3, 30), id="be-spring-0230"),
        pytest.param("30 2 * * *", BERLIN, date(2025, 10, 26), id="be-fall-0230"),
        pytest.param("0 2 * * *", BERLIN, date(2025, 10, 26), id="be-fall-0200"),
        pytest.param("30 2 * * *", NEW_YORK, date(2025, 3, 9), id="ny-spring-0230"),
        pytest.param("30 2 * * *", NEW_YORK, date(2025, 11, 2), id="ny-fall-0230"),
        pytest.param("30 1 * * *", NEW_YORK, date(2025, 11, 2), id="ny-fall-0130"),
        pytest.param("30 2 * * *", BERLIN, date(2025, 3, 29), id="be-day-before"),
        pytest.param("30 2 * * *", BERLIN, date(2025, 10, 27), id="be-day-after"),
    ],
)
def test_daily_fires_once(expression: str, zone: str, day: date) -> None:
    start = local(zone, day - timedelta(days=1), time(12))
    end = local(zone, day + timedelta(days=1), time(12))

    on_day = [
        fire
        for fire in fires(expression, zone, start, end)
        if fire.astimezone(ZoneInfo(zone)).date() == day
    ]

    assert len(on_day) == 1


@pytest.mark.parametrize(
    ("zone", "day", "offset"),
    [
        pytest.param(BERLIN, date(2025, 3, 29), 1, id="be-before-spring"),
        pytest.param(BERLIN, date(2025, 3, 31), 2, id="be-after-spring"),
        pytest.param(BERLIN, date(2025, 10, 25), 2, id="be-before-fall"),
        pytest.param(BERLIN, date(2025, 10, 27), 1, id="be-after-fall"),
        pytest.param(NEW_YORK, date(2025, 3, 8), -5, id="ny-before-spring"),
        pytest.param(NEW_YORK, date(2025, 3, 10), -4, id="ny-after-spring"),
    ],
)
def test_daily_keeps_wall_clock(zone: str, day: date, offset: int) -> None:
    after = local(zone, day - timedelta(days=1), time(12))

    fire = next_fire("30 2 * * *", zone, after)

    assert fire.astimezone(UTC) == datetime.combine(day, time(2, 30), UTC) - timedelta(
        hours=offset
    )


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        pytest.param(BERLIN, date(2025, 3, 30), id="berlin"),
        pytest.param(NEW_YORK, date(2025, 3, 9), id="new-york"),
    ],
)
def test_skipped_time_fires_after_jump(zone: str, day: date) -> None:
    # 02:30 does not exist that night, so the job runs one hour later, at 03:30.
    after = local(zone, day - timedelta(days=1), time(12))

    fire = next_fire("30 2 * * *", zone, after).astimezone(ZoneInfo(zone))

    assert fire.date() == day
    assert (fire.hour, fire.minute) == (3, 30)


# -- jobs every few hours or minutes -------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "span"),
    [
        pytest.param(BERLIN, date(2025, 3, 30), 17, id="be-spring"),
        pytest.param(BERLIN, date(2025, 10, 26), 19, id="be-fall"),
        pytest.param(NEW_YORK, date(2025, 3, 9), 17, id="ny-spring"),
        pytest.param(NEW_YORK, date(2025, 11, 2), 19, id="ny-fall"),
    ],
)
def test_six_hourly_on_dst_day(zone: str, day: date, span: int) -> None:
    # 00:00 to 18:00 on the wall clock lasts 17 real hours in spring and 19 in fall.
    start = local(zone, day) - timedelta(seconds=1)
    end = local(zone, day + timedelta(days=1)) - timedelta(seconds=1)

    moments = fires("0 */6 * * *", zone, start, end)
    wall = [(m.astimezone(ZoneInfo(zone)).hour, m.minute) for m in moments]

    assert wall == [(0, 0), (6, 0), (12, 0), (18, 0)]
    assert len(set(in_utc(moments))) == 4
    assert in_utc(moments)[-1] - in_utc(moments)[0] == timedelta(hours=span)


@pytest.mark.parametrize(
    ("zone", "day", "real_hours"),
    [
        pytest.param(BERLIN, date(2025, 3, 30), 3, id="be-spring"),
        pytest.param(BERLIN, date(2025, 10, 26), 5, id="be-fall"),
        pytest.param(NEW_YORK, date(2025, 3, 9), 3, id="ny-spring"),
        pytest.param(NEW_YORK, date(2025, 11, 2), 5, id="ny-fall"),
    ],
)
def test_five_minutely_on_dst_night(zone: str, day: date, real_hours: int) -> None:
    # From 00:00 to 04:00 on the wall clock, which lasts 3 or 5 real hours.
    start = local(zone, day)
    end = local(zone, day, time(4))

    moments = in_utc(fires("*/5 * * * *", zone, start, end))
    gaps = {b - a for a, b in pairwise(moments)}

    assert len(moments) == real_hours * 12
    assert len(set(moments)) == len(moments)
    assert gaps == {timedelta(minutes=5)}
