"""Configuration sources, read in order of precedence: flags, environment, SSM, file.

Each source returns ``{config.json path: Value}``. A source only translates names and
records where each value came from. Validation happens once, in ``settings``, so a
new source slots in without touching callers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.config.keys import KEYS_BY_ENV, KEYS_BY_PATH
from agent.errors import ConfigError


@dataclass(frozen=True)
class Value:
    """A raw setting and its origin, e.g. ``environment GITLAB_ACCESS_TOKEN``."""

    raw: Any
    source: str


class Source(Protocol):
    """Anything that can produce raw settings keyed by config.json path."""

    def load(self) -> dict[str, Value]: ...


class EnvironmentSource:
    """Process environment, by the contract's variable names (empty means unset)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def load(self) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for name, key in KEYS_BY_ENV.items():
            raw = self._environ.get(name, "")
            if raw.strip():
                values[key.path] = Value(raw, f"environment {name}")
        return values


class FileSource:
    """A JSON config file in the earlier agent's layout, extended with more keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Unknown keys are not fatal, so a config.json written for the earlier agent
        # with extra keys still loads. The loader logs a warning for each.
        self.unknown_keys: list[str] = []

    def load(self) -> dict[str, Value]:
        label = f"config file {self.path}"
        document = self._read(label)
        values: dict[str, Value] = {}
        self.unknown_keys = []
        for dotted, raw in _flatten(document).items():
            if dotted not in KEYS_BY_PATH:
                self.unknown_keys.append(dotted)
            elif raw is not None:
                values[dotted] = Value(raw, label)
        return values

    def _read(self, label: str) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                "--config", label, f"cannot be read ({exc.strerror})"
            ) from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "--config",
                label,
                f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            ) from exc
        if not isinstance(document, dict):
            raise ConfigError("--config", label, "must contain a JSON object")
        return document


class MappingSource:
    """Values given directly, such as command-line flags."""

    def __init__(self, values: Mapping[str, Any], label: str) -> None:
        self._values = values
        self._label = label

    def load(self) -> dict[str, Value]:
        return {
            path: Value(raw, f"{self._label} {path}")
            for path, raw in self._values.items()
            if raw is not None
        }


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested objects into dotted paths, keeping lists and known leaves whole."""
    flat: dict[str, Any] = {}
    for name, value in document.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and path not in KEYS_BY_PATH:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_file_path(flag: str | None, environ: Mapping[str, str]) -> Path | None:
    """Pick ``--config``, else ``MHQ_CONFIG``, else ``./config.json`` when it exists."""
    if flag:
        return Path(flag)
    if environ.get("MHQ_CONFIG"):
        return Path(environ["MHQ_CONFIG"])
    default = Path("config.json")
    return default if default.exists() else None


def merge(sources: list[Source]) -> dict[str, Value]:
    """Merge sources given highest precedence first: the first value found wins."""
    merged: dict[str, Value] = {}
    for source in reversed(sources):
        merged.update(source.load())
    return merged
