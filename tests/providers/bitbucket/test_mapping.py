"""Bitbucket API objects to records: statuses, people, activity and privacy."""

from __future__ import annotations

from typing import Any

import pytest

from agent.processing.records import FIELDS
from agent.providers.base import RepositoryRef
from agent.providers.bitbucket import mapping

REF = RepositoryRef(
    "bitbucket",
    "bitbucket.org/ws/repo",
    "e762bff4-f795-49c6-b9f9-6ea334b6d964",
    web_url="https://bitbucket.org/ws/repo",
)
USER = {
    "display_name": "User 38",
    "uuid": "{00000000-0000-4000-8000-000000000038}",
    "account_id": "000000000000000000000038",
    "nickname": "user-38",
}
PR = {"type": "pullrequest", "id": 7}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(
            {"name": "COMPLETED", "result": {"name": "SUCCESSFUL"}}, "success", id="ok"
        ),
        pytest.param(
            {"name": "COMPLETED", "result": {"name": "FAILED"}}, "failed", id="failed"
        ),
        pytest.param(
            {"name": "COMPLETED", "result": {"name": "STOPPED"}}, "canceled", id="stop"
        ),
        pytest.param(
            {"name": "COMPLETED", "status": {"name": "SUCCESSFUL"}},
            "success",
            id="deploy-ok",
        ),
        pytest.param({"name": "COMPLETED"}, "other", id="no-outcome"),
        pytest.param(
            {"name": "IN_PROGRESS", "stage": {"name": "PAUSED"}}, "pending", id="paused"
        ),
        pytest.param({"name": "IN_PROGRESS"}, "running", id="running"),
        pytest.param({"name": "PENDING"}, "pending", id="pending"),
        pytest.param({"name": "ROLLED_BACK"}, "other", id="rolled-back"),
        pytest.param(None, "other", id="missing"),
    ],
)
def test_status(state: Any, expected: str) -> None:
    assert mapping.status(state) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("User 39 <user39@example.com>", "User 39", id="name-email"),
        pytest.param("User 39", "User 39", id="name"),
        pytest.param("<user39@example.com>", None, id="email-only"),
        pytest.param("user39@example.com", None, id="bare-email"),
        pytest.param(None, None, id="missing"),
        pytest.param("  Zoë Ş <z@example.com> ", "Zoë Ş", id="unicode"),
    ],
)
def test_author_name_never_email(raw: Any, expected: str | None) -> None:
    assert mapping.author_name(raw) == expected


def test_user_prefers_account_id() -> None:
    record = mapping.user(USER)

    assert record is not None
    assert record.payload == {
        "provider": "bitbucket",
        "id": "000000000000000000000038",
        "username": "user-38",
        "name": "User 38",
    }


def test_user_falls_back_to_uuid() -> None:
    record = mapping.user({"uuid": "{u}", "display_name": "X"})

    assert record is not None
    assert record.id == "{u}"


@pytest.mark.parametrize(
    ("item", "kind", "key"),
    [
        pytest.param(
            {
                "pull_request": PR,
                "comment": {
                    "id": 5,
                    "user": USER,
                    "created_on": "2022-08-12T15:40:01.755214+00:00",
                    "inline": None,
                },
            },
            "comment",
            "comment:5",
            id="comment",
        ),
        pytest.param(
            {
                "pull_request": PR,
                "comment": {
                    "id": 6,
                    "user": USER,
                    "created_on": "2022-08-12T15:40:01+00:00",
                    "inline": {"path": "secret/file.py"},
                },
            },
            "review_comment",
            "comment:6",
            id="inline",
        ),
        pytest.param(
            {
                "pull_request": PR,
                "approval": {"user": USER, "date": "2022-08-12T15:40:01+00:00"},
            },
            "approved",
            "approval:{pr}:000000000000000000000038",
            id="approval",
        ),
        pytest.param(
            {
                "pull_request": PR,
                "update": {
                    "state": "MERGED",
                    "author": USER,
                    "date": "2022-08-12T15:40:01+00:00",
                },
            },
            "merged",
            "update:{pr}:2022-08-12T15:40:01+00:00",
            id="merged",
        ),
        pytest.param(
            {
                "pull_request": PR,
                "update": {
                    "state": "DECLINED",
                    "author": USER,
                    "date": "2022-08-12T15:40:01+00:00",
                },
            },
            "closed",
            "update:{pr}:2022-08-12T15:40:01+00:00",
            id="declined",
        ),
    ],
)
def test_activity_event(item: dict[str, Any], kind: str, key: str) -> None:
    pr_id = mapping.pull_request_id(REF, 7)

    record = mapping.activity_event(REF, item)

    assert record is not None
    assert record.payload["type"] == kind
    assert record.key == key.format(pr=pr_id)
    assert record.payload["pull_request_id"] == pr_id
    assert record.payload["actor_id"] == "000000000000000000000038"
    assert (
        record.payload["created_at"] == "2022-08-12T15:40:01.755Z"
        or record.payload["created_at"] == "2022-08-12T15:40:01.000Z"
    )
    assert set(record.payload) == {"provider", *FIELDS["pull_request_events"]}


def test_deleted_comment_skipped() -> None:
    item = {"pull_request": PR, "comment": {"id": 5, "deleted": True, "user": USER}}

    assert mapping.activity_event(REF, item) is None


def test_pull_request_keeps_unknowns_null() -> None:
    record = mapping.pull_request(
        REF, {"id": 9, "state": "OPEN"}, merged_at=None, closed_at=None
    )

    assert record.payload["draft"] is None
    assert record.payload["reviewer_ids"] is None
    assert record.payload["merged_at"] is None
    assert record.payload["id"] == f"{REF.api_id}:9"


def test_merged_times_only_for_their_state() -> None:
    merged = mapping.pull_request(
        REF,
        {"id": 9, "state": "MERGED", "closed_by": USER},
        merged_at="2022-01-01T00:00:00.000Z",
        closed_at="2022-01-02T00:00:00.000Z",
    )
    declined = mapping.pull_request(
        REF,
        {"id": 9, "state": "DECLINED"},
        merged_at="2022-01-01T00:00:00.000Z",
        closed_at="2022-01-02T00:00:00.000Z",
    )

    assert merged.payload["merged_at"] == "2022-01-01T00:00:00.000Z"
    assert merged.payload["closed_at"] is None
    assert merged.payload["merged_by_id"] == USER["account_id"]
    assert declined.payload["merged_at"] is None
    assert declined.payload["closed_at"] == "2022-01-02T00:00:00.000Z"
    assert declined.payload["state"] == "closed"
