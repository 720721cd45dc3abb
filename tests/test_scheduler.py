"""The scheduler's firing rules, with a controlled clock and stand-in jobs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config.settings import LoadOptions, Settings, load_settings
from agent.scheduler import Scheduler


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _settings(**environ: str) -> Settings:
    return load_settings(LoadOptions(environ=environ, config_path=None))


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 11, 59, 30, tzinfo=UTC))


def _scheduler(tmp_path: Path, clock: Clock, runner, **environ: str) -> Scheduler:
    settings = _settings(
        FETCH_SCHEDULE=environ.pop("FETCH_SCHEDULE", "0 * * * *"),
        PUSH_SCHEDULE=environ.pop("PUSH_SCHEDULE", "30 * * * *"),
        HEARTBEAT_SCHEDULE=environ.pop("HEARTBEAT_SCHEDULE", "0 0 1 1 *"),
        **environ,
    )
    scheduler = Scheduler(
        lambda: settings,
        "postgresql://unused",
        alive_file=tmp_path / "alive",
        runner=runner,
        clock=clock,
    )
    scheduler.plan()
    return scheduler


def test_job_fires_when_due(tmp_path: Path, clock: Clock) -> None:
    ran: list[tuple[str, str]] = []
    scheduler = _scheduler(
        tmp_path, clock, lambda job, trigger: ran.append((job, trigger))
    )

    scheduler.tick()
    clock.now += timedelta(seconds=31)
    scheduler.tick()
    scheduler.join(5)

    assert ran == [("fetch", "schedule")]
    assert (tmp_path / "alive").exists()


def test_running_job_never_overlaps(tmp_path: Path, clock: Clock) -> None:
    release = threading.Event()
    started: list[str] = []
    active = threading.Semaphore(1)

    def slow(job: str, trigger: str) -> None:
        assert active.acquire(blocking=False), "two runs of one job at once"
        started.append(trigger)
        release.wait(5)
        active.release()

    scheduler = _scheduler(tmp_path, clock, slow, FETCH_SCHEDULE="* * * * *")
    for _ in range(4):
        clock.now += timedelta(minutes=1)
        scheduler.tick()
    release.set()
    scheduler.join(5)

    # Three fires came while the first run was busy: they coalesce into one rerun.
    assert started == ["schedule", "coalesced"]


def test_missed_fires_coalesce(tmp_path: Path, clock: Clock) -> None:
    ran: list[str] = []
    scheduler = _scheduler(
        tmp_path,
        clock,
        lambda job, trigger: ran.append(job),
        FETCH_SCHEDULE="*/5 * * * *",
    )

    clock.now += timedelta(hours=3)
    scheduler.tick()
    scheduler.join(5)

    assert ran.count("fetch") == 1
    assert scheduler.plan()["fetch"] > clock.now


@pytest.mark.parametrize(
    ("zone", "start", "expected_hours_utc"),
    [
        # Berlin springs forward on 2026-03-29: 02:30 does not exist, fires 03:30.
        pytest.param(
            "Europe/Berlin",
            datetime(2026, 3, 28, 0, 0, tzinfo=UTC),
            [1, 1, 0],
            id="berlin-spring",
        ),
        # New York falls back on 2026-11-01: 01:30 local happens twice, fires once.
        pytest.param(
            "America/New_York",
            datetime(2026, 10, 31, 12, 0, tzinfo=UTC),
            [5, 6, 6],
            id="new-york-fall",
        ),
    ],
)
def test_daily_job_across_dst(
    tmp_path: Path, zone: str, start: datetime, expected_hours_utc: list[int]
) -> None:
    clock = Clock(start)
    fires: list[datetime] = []
    cron = "30 2 * * *" if zone == "Europe/Berlin" else "30 1 * * *"
    scheduler = _scheduler(
        tmp_path,
        clock,
        lambda job, trigger: None,
        FETCH_SCHEDULE=cron,
        SCHEDULE_TIMEZONE=zone,
    )
    for _ in range(3):
        fire = scheduler.plan()["fetch"]
        fires.append(fire)
        clock.now = fire + timedelta(seconds=1)

    assert [f.astimezone(UTC).hour for f in fires] == expected_hours_utc
    assert len({f.date() for f in fires}) == 3


def test_schedule_change_replans(tmp_path: Path, clock: Clock) -> None:
    current = {"value": _settings(FETCH_SCHEDULE="0 * * * *")}
    scheduler = Scheduler(
        lambda: current["value"],
        "postgresql://unused",
        alive_file=tmp_path / "alive",
        runner=lambda j, t: None,
        clock=clock,
    )
    scheduler.plan()

    current["value"] = _settings(FETCH_SCHEDULE="45 11 * * *")
    clock.now = datetime(2026, 3, 1, 11, 40, tzinfo=UTC)
    scheduler.tick()

    assert scheduler.plan()["fetch"] == datetime(2026, 3, 1, 11, 45, tzinfo=UTC)


def test_frequent_job_through_fall_back(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 1, 4, 50, tzinfo=UTC))
    scheduler = _scheduler(
        tmp_path,
        clock,
        lambda job, trigger: None,
        FETCH_SCHEDULE="*/15 * * * *",
        SCHEDULE_TIMEZONE="America/New_York",
    )
    fires = []
    for _ in range(12):
        fire = scheduler.plan()["fetch"]
        fires.append(fire.astimezone(UTC))
        clock.now = fire

    assert fires == sorted(set(fires))
    assert fires[-1] - fires[0] <= timedelta(hours=3, minutes=15)
