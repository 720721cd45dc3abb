"""docs/privacy.md lists exactly the fields that leave, with what each setting does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.processing.privacy import Policy, PolicySettings
from agent.processing.records import FIELDS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"
KEY = "doc-test-pseudonym-key-0123456789"
SETTINGS = {
    "PRIVACY_PSEUDONYM_KEY": None,
    "PRIVACY_TITLES": "titles",
    "PRIVACY_BRANCH_NAMES": "branch_names",
    "PRIVACY_REPOSITORY_NAMES": "repository_names",
}
COLUMNS = ("send", "redact", "pseudonymise")
# A value that shows whether a field is sent as is, as text, null or a pseudonym.
SAMPLE = "sample value mail@example.com"

Row = tuple[str, str, str, str, str, str]


def documented_rows() -> list[Row]:
    """Parse the table under '## Fields'."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Fields", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        assert len(cells) == 6, line
        rows.append(tuple(cells))
    return rows  # type: ignore[return-value]


def settings_for(setting: str, column: str) -> PolicySettings | None:
    """Return the settings that a column means for a setting; None where n/a."""
    if setting == "—":
        return PolicySettings() if column == "send" else None
    if setting == "PRIVACY_PSEUDONYM_KEY":
        return {
            "send": PolicySettings(),
            "redact": None,
            "pseudonymise": PolicySettings(key=KEY),
        }[column]
    return PolicySettings(key=KEY, **{SETTINGS[setting] or "": column})


def observed(entity: str, field: str, settings: PolicySettings) -> str:
    """Apply the policy to a record of sample values and classify one field."""
    record: dict[str, Any] = {name: SAMPLE for name in ("provider", *FIELDS[entity])}
    record["reviewer_ids"] = [SAMPLE]
    if entity == "deletions":
        record["entity"] = "pull_request_events"
    value = Policy(settings).apply(entity, record)[field]
    if field == "entity":
        value = SAMPLE if value == "pull_request_events" else value
    if isinstance(value, list):
        value = value[0]
    if value is None:
        return "null"
    if re.fullmatch(r"p_[0-9a-f]{24}", value):
        return "pseudonym"
    return "as is" if value == SAMPLE else "text"


def test_table_lists_every_field_once() -> None:
    documented = [(row[0], row[1]) for row in documented_rows()]
    sent = [
        (entity, field)
        for entity, fields in FIELDS.items()
        for field in ("provider", *fields)
    ]

    assert sorted(documented) == sorted(sent)
    assert len(set(documented)) == len(documented)


@pytest.mark.parametrize("row", documented_rows(), ids=lambda row: f"{row[0]}.{row[1]}")
def test_row_matches_code(row: Row) -> None:
    entity, field, setting, *cells = row
    for column, documented in zip(COLUMNS, cells, strict=True):
        settings = settings_for(setting, column)
        if settings is None:
            assert documented == "—", (column, documented)
            continue
        assert observed(entity, field, settings) == documented, column


def test_undocumented_setting_changes_nothing() -> None:
    """A field marked '—' keeps its value under every hiding setting."""
    hiding = [
        PolicySettings(key=KEY),
        PolicySettings(key=KEY, titles="redact", branch_names="redact"),
        PolicySettings(key=KEY, repository_names="pseudonymise"),
    ]
    for entity, field, setting, *_ in documented_rows():
        if setting != "—":
            continue
        for settings in hiding:
            assert observed(entity, field, settings) in ("as is", "text"), field
