"""Logging: JSON lines in the service, readable text on a terminal, secrets masked.

Every event is a short lower-case message with bound fields passed through
``extra={...}``; the formatters print those fields as keys (JSON) or ``key=value``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came from ``extra`` and is a field.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_MASK = "***"
# Token-bearing query parameters and userinfo in URLs, masked even when the value is
# not a configured secret (a token passed by a link header, a password in a DSN).
_URL_SECRETS = re.compile(
    r"(?i)((?:private_token|access_token|token|password|secret)=)[^&\s\"']+"
)
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]+@")


class SecretMasker:
    """Replaces every registered secret value wherever it appears in log output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def register(self, values: list[str]) -> None:
        """Mask ``values``, and their escaped forms as repr() and JSON print them."""
        forms = set()
        for value in values:
            if value and len(value) >= 4:
                forms |= {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
        with self._lock:
            merged = set(self._secrets) | forms
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        text = _URL_SECRETS.sub(rf"\1{_MASK}", text)
        return _USERINFO.sub(rf"\1{_MASK}@", text)


masker = SecretMasker()


def mask(text: str) -> str:
    """Mask secrets and URL credentials in ``text`` for logs, status and messages."""
    return masker.mask(text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return mask(line)


def configure(log_format: str | None, level: str | None) -> None:
    """Send agent logs to stderr as JSON lines, or as text when stderr is a terminal."""
    chosen = log_format or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((level or "INFO").upper())
    # urllib3 logs every retry and connection at DEBUG with full URLs; ours are masked.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
