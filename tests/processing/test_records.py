"""Records: UTC timestamps, the content hash, and the fields make_record keeps."""

from __future__ import annotations

from typing import Any

import pytest

from agent.processing.records import (
    FIELDS,
    Record,
    first_line,
    id_or_none,
    make_record,
    utc_timestamp,
)

# -- utc_timestamp -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            "2019-06-28T05:21:43.743Z", "2019-06-28T05:21:43.743Z", id="utc-millis"
        ),
        pytest.param(
            "2019-06-28T05:21:43Z", "2019-06-28T05:21:43.000Z", id="utc-whole"
        ),
        pytest.param("2019-06-28T05:21:43z", "2019-06-28T05:21:43.000Z", id="lower-z"),
        pytest.param(
            "2024-03-01T05:00:00.000+08:00", "2024-02-29T21:00:00.000Z", id="plus-8"
        ),
        pytest.param(
            "2023-12-31T22:30:00-05:00", "2024-01-01T03:30:00.000Z", id="minus-5"
        ),
        pytest.param(
            "2023-11-07T15:45:15+00:00", "2023-11-07T15:45:15.000Z", id="plus-0"
        ),
        pytest.param(
            "2023-11-07T15:45:15.123456Z", "2023-11-07T15:45:15.123Z", id="micros"
        ),
        pytest.param("2023-11-07T15:45:15", "2023-11-07T15:45:15.000Z", id="naive"),
        pytest.param(" 2023-11-07T15:45:15Z ", "2023-11-07T15:45:15.000Z", id="padded"),
    ],
)
def test_utc_timestamp(raw: str, expected: str) -> None:
    assert utc_timestamp(raw) == expected


@pytest.mark.parametrize("raw", [None, ""], ids=["none", "empty"])
def test_utc_timestamp_missing(raw: Any) -> None:
    assert utc_timestamp(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("yesterday", id="text"),
        pytest.param("2024-02-30T00:00:00Z", id="no-such-day"),
        pytest.param("2024-01-01T25:00:00Z", id="hour-25"),
        pytest.param(1561699303, id="number"),
        pytest.param(["2019-06-28T05:21:43Z"], id="list"),
        pytest.param(True, id="bool"),
    ],
)
def test_utc_timestamp_invalid(raw: Any) -> None:
    with pytest.raises(ValueError):
        utc_timestamp(raw)


# -- content_hash --------------------------------------------------------------------


def pull_request_fields() -> dict[str, Any]:
    return {
        "id": 32348491,
        "repository_id": "12345678",
        "number": 1,
        "title": "Résumé of the “spend” package",
        "state": "merged",
        "draft": False,
        "reviewer_ids": ["90000001", "90000002"],
        "created_at": "2019-06-28T05:21:43.743Z",
    }


def test_hash_ignores_field_order() -> None:
    fields = pull_request_fields()
    reordered = dict(reversed(list(fields.items())))

    first = make_record("pull_requests", "gitlab", fields)
    second = make_record("pull_requests", "gitlab", reordered)

    assert first.content_hash() == second.content_hash()


def test_hash_ignores_payload_order() -> None:
    record = make_record("pull_requests", "gitlab", pull_request_fields())
    reordered = Record(
        record.entity, dict(reversed(list(record.payload.items()))), record.key
    )

    assert list(reordered.payload) != list(record.payload)
    assert reordered.content_hash() == record.content_hash()
    assert reordered.canonical_json() == record.canonical_json()


def test_hash_is_sha256() -> None:
    record = make_record("pull_requests", "gitlab", pull_request_fields())

    assert len(record.content_hash()) == 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("title", "Résumé of the “spend” package!", id="title"),
        pytest.param("draft", None, id="draft-none"),
        pytest.param("reviewer_ids", ["90000002", "90000001"], id="reviewer-order"),
        pytest.param("number", "1", id="number-as-text"),
    ],
)
def test_hash_changes_with_content(name: str, value: Any) -> None:
    original = make_record("pull_requests", "gitlab", pull_request_fields())
    changed = make_record(
        "pull_requests", "gitlab", {**pull_request_fields(), name: value}
    )

    assert changed.content_hash() != original.content_hash()


def test_hash_ignores_key_and_parent() -> None:
    fields = pull_request_fields()

    first = make_record("pull_requests", "gitlab", fields, key="a", parent_id="1")
    second = make_record("pull_requests", "gitlab", fields, key="b", parent_id="2")

    assert first.content_hash() == second.content_hash()


def test_canonical_json_keeps_unicode() -> None:
    record = make_record("pull_requests", "gitlab", pull_request_fields())

    assert "Résumé" in record.canonical_json()


# -- make_record ---------------------------------------------------------------------


def test_make_record_rejects_extra_field() -> None:
    fields = {**pull_request_fields(), "description": "Closes #1"}

    with pytest.raises(ValueError) as caught:
        make_record("pull_requests", "gitlab", fields)

    assert "description" in str(caught.value)


@pytest.mark.parametrize(
    ("entity", "extra"),
    [
        pytest.param("pull_request_events", "body", id="note-body"),
        pytest.param("users", "email", id="user-email"),
        pytest.param("pull_request_commits", "author_email", id="commit-email"),
        pytest.param("deployments", "provider", id="provider-as-field"),
    ],
)
def test_make_record_rejects_field(entity: str, extra: str) -> None:
    with pytest.raises(ValueError):
        make_record(entity, "gitlab", {"id": 1, extra: "x"})


@pytest.mark.parametrize("value", [None, ""], ids=["none", "empty"])
def test_make_record_requires_id(value: Any) -> None:
    with pytest.raises(ValueError):
        make_record("users", "gitlab", {"id": value, "username": "user-01"})


def test_make_record_fills_missing_none() -> None:
    record = make_record("pull_requests", "gitlab", {"id": 5})

    assert set(record.payload) == {"provider", *FIELDS["pull_requests"]}
    assert all(
        record.payload[name] is None for name in FIELDS["pull_requests"] if name != "id"
    )


def test_make_record_id_as_text() -> None:
    record = make_record("users", "gitlab", {"id": 90000001})

    assert record.payload["id"] == "90000001"
    assert record.id == "90000001"
    assert record.key == "90000001"


def test_make_record_provider_and_key() -> None:
    record = make_record(
        "deployments",
        "gitlab",
        {"id": 7},
        key="pipeline:7",
        repository_key="gitlab.com/a/b",
        parent_id="9",
    )

    assert record.payload["provider"] == "gitlab"
    assert record.key == "pipeline:7"
    assert record.repository_key == "gitlab.com/a/b"
    assert record.parent_id == "9"
    assert record.entity == "deployments"


# -- small helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(123, "123", id="number"),
        pytest.param("abc", "abc", id="text"),
        pytest.param(0, "0", id="zero"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param(True, None, id="bool"),
    ],
)
def test_id_or_none(raw: Any, expected: str | None) -> None:
    assert id_or_none(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Fix it\n\nBody text", "Fix it", id="multiline"),
        pytest.param("  Fix it  \n", "Fix it", id="padded"),
        pytest.param("\n\nFix it\nmore", "Fix it", id="leading-blank"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param(None, None, id="none"),
        pytest.param(42, None, id="number"),
    ],
)
def test_first_line(raw: Any, expected: str | None) -> None:
    assert first_line(raw) == expected
