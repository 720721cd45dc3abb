"""What MHQ should receive for the recorded Bitbucket fixtures, from the raw files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.expected import utc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bitbucket"
REPOSITORY_UUID = "e762bff4-f795-49c6-b9f9-6ea334b6d964"

STATE = {"OPEN": "open", "MERGED": "merged", "DECLINED": "closed"}

# Pipeline and deployment states of the fixtures, read off by hand: result name when
# COMPLETED, else the state name; stage HALTED on IN_PROGRESS means waiting.
PIPELINE_STATUS = {
    ("COMPLETED", "SUCCESSFUL", None): "success",
    ("COMPLETED", "FAILED", None): "failed",
    ("COMPLETED", "STOPPED", None): "canceled",
    ("COMPLETED", "COMPLETED", None): "other",
    ("IN_PROGRESS", None, "HALTED"): "pending",
    ("SUCCESSFUL", "SUCCESSFUL", None): "success",
    ("PASSED", "PASSED", None): "success",
    ("FAILED", "FAILED", None): "failed",
    ("ERROR", "ERROR", None): "failed",
    ("STOPPED", "STOPPED", None): "canceled",
    ("HALTED", "HALTED", None): "pending",
    ("IN_PROGRESS", "IN_PROGRESS", None): "running",
    ("PAUSED", "PAUSED", None): "pending",
    ("RUNNING", "RUNNING", None): "running",
    ("PENDING", "PENDING", None): "pending",
    ("EXPIRED", "EXPIRED", None): "failed",
}
DEPLOYMENT_STATUS = {
    "COMPLETED": "other",  # the fixtures' fields= projection dropped the outcome
    "UNDEPLOYED": "other",
    "SUCCESSFUL": "success",
    "FAILED": "failed",
    "STOPPED": "canceled",
    "CANCELLED": "canceled",
    "IN_PROGRESS": "running",
    "PENDING": "pending",
    "ROLLED_BACK": "other",
    "UNKNOWN": "other",
}


def load(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def pr_id(number: int) -> str:
    return f"{REPOSITORY_UUID}:{number}"


def pipeline_key(raw: dict[str, Any]) -> tuple[str, str | None, str | None]:
    state = raw["state"]
    return (
        state["name"],
        (state.get("result") or {}).get("name"),
        (state.get("stage") or {}).get("name"),
    )


__all__ = ["utc"]
