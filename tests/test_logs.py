"""Log formatting: secrets are masked in messages, fields and exception traces."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from agent import logs

SECRET = "glpat-9f8e7d6c5b4a3210"


@pytest.fixture(autouse=True)
def registered() -> None:
    logs.masker.register([SECRET])


def _record_with_trace() -> logging.LogRecord:
    try:
        raise RuntimeError(f"request with token {SECRET} failed")
    except RuntimeError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "agent.test", logging.ERROR, __file__, 1, "failed for %s", (SECRET,), exc_info
    )


@pytest.mark.parametrize(
    "formatter", [logs.JsonFormatter(), logs.TextFormatter()], ids=["json", "text"]
)
def test_trace_masked(formatter: logging.Formatter) -> None:
    record = _record_with_trace()
    record.url = f"https://gitlab.example.com/api/v4/user?private_token={SECRET}"

    output = formatter.format(record)

    assert "Traceback" in output
    assert "RuntimeError" in output
    assert SECRET not in output
    assert "***" in output


def test_json_line_is_one_object() -> None:
    output = logs.JsonFormatter().format(_record_with_trace())

    entry = json.loads(output)
    assert entry["level"] == "error"
    assert entry["event"] == "failed for ***"
    assert "exception" in entry


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("https://u:pw123@host/x", "https://u:***@host/x", id="userinfo"),
        pytest.param("a?access_token=abc&b=1", "a?access_token=***&b=1", id="query"),
        pytest.param(repr(SECRET + "\n")[1:-1], "***\\n", id="escaped"),
    ],
)
def test_mask_text(text: str, expected: str) -> None:
    assert logs.mask(text) == expected
