"""Validated settings, built afresh from the sources at the start of every run."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from croniter import croniter

from agent.config.keys import KEYS, KEYS_BY_PATH, Key, Kind
from agent.config.sources import (
    EnvironmentSource,
    FileSource,
    MappingSource,
    Source,
    Value,
    config_file_path,
    merge,
)
from agent.errors import ConfigError
from agent.logs import mask

if TYPE_CHECKING:
    from agent.config.ssm import SsmSource


@dataclass(frozen=True)
class GitLabSettings:
    domain_url: str
    access_token: str | None
    ca_bundle: str | None
    repositories: tuple[str, ...]


@dataclass(frozen=True)
class BitbucketSettings:
    access_token: str | None
    workspace_name: str | None
    api_url: str
    repositories: tuple[str, ...]
    requests_per_hour: int


@dataclass(frozen=True)
class Settings:
    """Every setting after validation; ``sources`` names where each came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    ssm_prefix: str | None = None

    def get(self, path: str) -> Any:
        return self.values.get(path)

    @property
    def gitlab(self) -> GitLabSettings:
        return GitLabSettings(
            domain_url=self.values["integrations.gitlab.domain_url"].rstrip("/"),
            access_token=self.values.get("integrations.gitlab.access_token"),
            ca_bundle=self.values.get("integrations.gitlab.ca_bundle"),
            repositories=tuple(self.values["integrations.gitlab.repositories"]),
        )

    @property
    def bitbucket(self) -> BitbucketSettings:
        return BitbucketSettings(
            access_token=self.values.get("integrations.bitbucket.access_token"),
            workspace_name=self.values.get("integrations.bitbucket.workspace_name"),
            api_url=self.values["integrations.bitbucket.api_url"].rstrip("/"),
            repositories=tuple(self.values["integrations.bitbucket.repositories"]),
            requests_per_hour=self.values["integrations.bitbucket.requests_per_hour"],
        )

    @property
    def secrets(self) -> list[str]:
        """Every secret value in force, for masking in logs and messages."""
        return [
            str(self.values[key.path])
            for key in KEYS
            if key.secret and self.values.get(key.path)
        ]

    def require(self, *paths: str) -> None:
        """Raise ConfigError naming the first of ``paths`` that has no value."""
        for path in paths:
            if self.values.get(path) in (None, "", ()):
                key = KEYS_BY_PATH[path]
                raise ConfigError(path, "no source", f"is required; {_how_to_set(key)}")


@dataclass
class LoadOptions:
    """The command line's part of the sources: flags and where to look."""

    config_path: str | None = None
    ssm_prefix: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None


def load_settings(options: LoadOptions | None = None) -> Settings:
    """Read every source in precedence order and validate the result.

    Raises ConfigError for the first invalid value, naming its key and source.
    """
    options = options or LoadOptions()
    environ = os.environ if options.environ is None else options.environ
    sources: list[Source] = [
        MappingSource(options.flags, "command-line flag"),
        EnvironmentSource(environ),
    ]
    ssm_prefix = options.ssm_prefix or environ.get("MHQ_SSM_PREFIX") or None
    ssm_source = _ssm_source(ssm_prefix) if ssm_prefix else None
    if ssm_source:
        sources.append(ssm_source)
    file_path = config_file_path(options.config_path, environ)
    file_source = FileSource(file_path) if file_path else None
    if file_source:
        sources.append(file_source)
    merged = merge(sources)
    warnings = [
        f"unknown key {name} in config file {file_path} is ignored"
        for name in (file_source.unknown_keys if file_source else [])
    ]
    warnings += [
        f"unknown SSM parameter {name} is ignored"
        for name in (ssm_source.unknown_names if ssm_source else [])
    ]
    return _validate(merged, tuple(warnings), ssm_prefix)


def _ssm_source(prefix: str) -> SsmSource:
    # Imported here so that boto3 is loaded only when an SSM prefix is configured.
    from agent.config.ssm import SsmSource

    return SsmSource(prefix)


def _validate(
    merged: dict[str, Value], warnings: tuple[str, ...], ssm_prefix: str | None
) -> Settings:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        given = merged.get(key.path)
        if given is None:
            values[key.path] = key.default
            sources[key.path] = "default"
            continue
        values[key.path] = _parse(key, given)
        sources[key.path] = given.source
    _check_combinations(values, sources)
    return Settings(values, sources, warnings, ssm_prefix)


def _parse(key: Key, given: Value) -> Any:
    parser = _PARSERS[key.kind]
    try:
        return parser(key, given.raw)
    except ValueError as exc:
        raise ConfigError(key.path, given.source, str(exc)) from None


def _parse_string(key: Key, raw: Any) -> str:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ValueError(f"must be a string, not {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise ValueError("is empty; remove it or give a value")
    return text


_PRINTABLE_ASCII = re.compile(r"[!-~]+")


def _parse_secret(key: Key, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty string (value not shown)")
    text = raw.strip()
    # Tokens travel in HTTP headers, which take printable ASCII only.
    if key.path.endswith("access_token") and not _PRINTABLE_ASCII.fullmatch(text):
        raise ValueError(
            "contains spaces, line breaks or non-ASCII characters; copy the token "
            "again without them (value not shown)"
        )
    return text


def _parse_url(key: Key, raw: Any) -> str:
    text = _parse_string(key, raw)
    parts = urlsplit(text)
    # A code host's URL becomes part of every repository key sent to MHQ.
    if key.path.startswith("integrations.") and (parts.username or parts.password):
        raise ValueError(
            "contains a user name or password; remove it and give credentials in "
            "the token settings (value not shown)"
        )
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{mask(text)!r} is not an http(s) URL with a host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"{text!r} uses plain http to a host that is not loopback; use https"
        )
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_list(key: Key, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = _split_list_text(raw)
    if not isinstance(raw, list | tuple) or not all(isinstance(i, str) for i in raw):
        raise ValueError("must be a list of strings")
    return tuple(item.strip() for item in raw if item.strip())


def _split_list_text(text: str) -> list[str]:
    """Accept a JSON array or a comma-separated StringList, as SSM stores either."""
    import json

    stripped = text.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not a valid JSON array ({exc.msg})") from None
        if not isinstance(parsed, list):
            raise ValueError("must be a JSON array of strings")
        return parsed
    return stripped.split(",")


def _parse_integer(key: Key, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be a whole number, not true/false")
    try:
        number = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{number} is negative; give 0 or more")
    if key.path.startswith(("http.", "push.")) and number == 0:
        raise ValueError("must be at least 1")
    return number


def _parse_cron(key: Key, raw: Any) -> str:
    text = _parse_string(key, raw)
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(
            f"{text!r} is not a 5-field cron expression such as '0 */6 * * *'"
        )
    return text


def _parse_timezone(key: Key, raw: Any) -> str:
    text = _parse_string(key, raw)
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{text!r} is not an IANA time zone such as 'UTC' or 'Europe/Berlin'"
        ) from None
    return text


def _parse_choice(key: Key, raw: Any) -> str:
    text = _parse_string(key, raw)
    for choice in key.choices:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"{text!r} is not one of {', '.join(key.choices)}")


_PARSERS = {
    Kind.STRING: _parse_string,
    Kind.SECRET: _parse_secret,
    Kind.URL: _parse_url,
    Kind.LIST: _parse_list,
    Kind.INTEGER: _parse_integer,
    Kind.CRON: _parse_cron,
    Kind.TIMEZONE: _parse_timezone,
    Kind.CHOICE: _parse_choice,
}


def _check_combinations(values: dict[str, Any], sources: dict[str, str]) -> None:
    secret = values.get("mhq.client_secret")
    if secret:
        _check_client_secret(secret, sources["mhq.client_secret"])
    public_key = values.get("mhq.public_key")
    if public_key:
        _check_public_key(public_key, sources["mhq.public_key"])
    bundle = values.get("integrations.gitlab.ca_bundle")
    if bundle and not os.path.isfile(bundle):
        raise ConfigError(
            "integrations.gitlab.ca_bundle",
            sources["integrations.gitlab.ca_bundle"],
            f"file {bundle!r} not found; give the path of a PEM CA bundle",
        )
    database_url = values.get("database_url")
    if database_url and urlsplit(database_url).scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            "database_url",
            sources["database_url"],
            "must be a postgresql:// URL (value not shown)",
        )
    _check_privacy(values, sources)


# A shorter key could be found by trying keys against pseudonyms of known names.
MIN_PSEUDONYM_KEY_LENGTH = 16
PSEUDONYMISED = ("privacy.titles", "privacy.branch_names", "privacy.repository_names")


def _check_privacy(values: dict[str, Any], sources: dict[str, str]) -> None:
    key = values.get("privacy.pseudonym_key")
    if key and len(key) < MIN_PSEUDONYM_KEY_LENGTH:
        raise ConfigError(
            "privacy.pseudonym_key",
            sources["privacy.pseudonym_key"],
            f"is shorter than {MIN_PSEUDONYM_KEY_LENGTH} characters; use a long "
            "random value such as the output of 'openssl rand -hex 32' "
            "(value not shown)",
        )
    for path in PSEUDONYMISED:
        if values.get(path) == "pseudonymise" and not key:
            raise ConfigError(
                path,
                sources[path],
                "is pseudonymise, which needs a pseudonym key: "
                + _how_to_set(KEYS_BY_PATH["privacy.pseudonym_key"]),
            )


def _check_client_secret(secret: str, source: str) -> None:
    body = secret.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not secret.startswith("whsec_") or len(decoded) < 16:
        raise ConfigError(
            "mhq.client_secret",
            source,
            "must be 'whsec_' followed by base64 of at least 16 bytes, as MHQ "
            "shows it (value not shown)",
        )


def _check_public_key(pem: str, source: str) -> None:
    from agent.push.crypto import load_public_key

    try:
        load_public_key(pem)
    except ValueError as exc:
        raise ConfigError("mhq.public_key", source, str(exc)) from None


def _how_to_set(key: Key) -> str:
    where = [f"config.json key {key.path}", f"SSM parameter <prefix>/{key.ssm}"]
    if key.env:
        where.insert(0, f"environment variable {key.env}")
    return "set it as " + " or ".join(where)
