"""What MHQ should receive for the recorded fixtures, worked out from the raw files.

Written independently of agent/providers/gitlab/mapping.py: explicit tables rather
than the agent's own rules, so a mapping mistake cannot hide behind itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gitlab"


def load(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def urls(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").split()


def utc(value: str | None) -> str | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def merge_requests() -> dict[str, dict[str, Any]]:
    """Every distinct merge request of the three list captures, by id."""
    found: dict[str, dict[str, Any]] = {}
    for name in (
        "merge_requests.json",
        "merge_requests_for_mr_commit_test.json",
        "merge_requests_for_mr_notes_test.json",
    ):
        for mr in load(name):
            found[str(mr["id"])] = mr
    return found


STATE = {"opened": "open", "merged": "merged", "closed": "closed"}

# Note id -> event type, read off each note body by hand.
NOTE_TYPES = {
    186327072: "other",  # assigned to
    186327158: "commit_pushed",
    186434804: "commit_pushed",
    186436608: "commit_pushed",
    186438503: "commit_pushed",
    186438743: "ready_for_review",  # unmarked as a Work In Progress
    186439132: "comment",
    186439136: "other",  # assigned and unassigned
    186441803: "commit_pushed",
    186537187: "other",  # mentioned in commit
    186537191: "merged",
    208061122: "comment",
    208092969: "comment",
    208121492: "other",
    208121682: "merged",
    208121722: "other",
    208121781: "comment",
    208185588: "other",  # restored source branch
    208185663: "other",
    208186075: "commit_pushed",
    135100359: "approved",
    135223089: "approved",
    137424744: "approved",
    135848627: "approved",
    135848646: "unapproved",
    135848654: "approved",
}

PIPELINE_STATUS = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "running": "running",
    "pending": "pending",
    "created": "pending",
    "waiting_for_resource": "pending",
    "preparing": "pending",
    "scheduled": "pending",
    "manual": "other",
    "skipped": "skipped",
}

DEPLOYMENT_STATUS = {
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "running": "running",
    "created": "pending",
    "blocked": "pending",
    "completed": "other",
    "undeployed": "other",
}

PROJECT_IDS = {
    "gitlab-data/snowflake_spend": "12345678",
    "merico-dev/ee/charts": "12345679",
    "merico-dev/ee/vdev.co": "12345680",
}
