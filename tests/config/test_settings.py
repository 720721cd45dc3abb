"""Settings: validation of every key, precedence of the sources, and error messages."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.config.keys import KEYS, KEYS_BY_PATH, Kind
from agent.config.settings import LoadOptions, Settings, load_settings
from agent.errors import ConfigError
from tests.fakes.keys import ReceiverKeys, make_rsa_keypair

ALL_PATHS = {key.path for key in KEYS}

# One value per key that validation must reject when it arrives from the environment.
ENV_INVALID: dict[str, str] = {
    "mhq.webhook_url": "ftp://mhq.example.com/hook",
    "mhq.heartbeat_url": "not a url",
    "mhq.client_secret": "whsec_dG9vc2hvcnQ=",
    "mhq.public_key": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----",
    "database_url": "mysql://agent:hunter2env@db.example.com/agent",
    "integrations.gitlab.domain_url": "gitlab.example.com",
    "integrations.gitlab.ca_bundle": "/nonexistent/mhq-test/ca.pem",
    "integrations.bitbucket.api_url": "https://",
    "schedule.fetch": "every 6 hours",
    "schedule.push": "61 * * * *",
    "schedule.heartbeat": "*/5 * * *",
    "schedule.timezone": "Mars/Olympus_Mons",
    "sync.initial_days": "ninety",
    "integrations.bitbucket.requests_per_hour": "lots",
    "integrations.gitlab.requests_per_minute": "fast",
    "retention.delivered_days": "a week",
    "retention.job_runs_days": "-3",
    "privacy.titles": "hide",
    "privacy.branch_names": "encrypt",
    "privacy.repository_names": "pseudonymize",
    "http.max_concurrency": "0",
    "http.timeout_s": "-5",
    "http.retry_budget_s": "2.5",
    "push.max_batch_records": "0",
    "push.max_batch_bytes": "4MB",
    "push.retry_budget_s": "1e3",
    "log.format": "xml",
    "log.level": "TRACE",
}

# Keys for which no environment value is invalid, and why.
ENV_ALWAYS_VALID: dict[str, str] = {
    "mhq.client_id": "any non-blank text is a client id",
    "mhq.agent_id": "any non-blank text is an agent id",
    "integrations.gitlab.access_token": "any non-blank text is accepted as a token",
    "integrations.gitlab.repositories": "the key has no environment variable",
    "integrations.bitbucket.access_token": "any non-blank text is accepted as a token",
    "integrations.bitbucket.workspace_name": "any non-blank text is a workspace slug",
    "integrations.bitbucket.repositories": "the key has no environment variable",
    "privacy.pseudonym_key": "any non-blank text is an HMAC key",
}

# One value per key that validation must reject when it arrives from config.json.
FILE_INVALID: dict[str, Any] = {
    "mhq.webhook_url": "http://mhq.example.com/hook",
    "mhq.heartbeat_url": 42,
    "mhq.client_id": ["client-a"],
    "mhq.client_secret": "not-a-whsec-secret-value",
    "mhq.public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
    "mhq.agent_id": True,
    "database_url": "mysql://agent:hunter2file@db.example.com/agent",
    "integrations.gitlab.domain_url": "http://gitlab.example.com",
    "integrations.gitlab.access_token": 918273645,
    "integrations.gitlab.ca_bundle": "/nonexistent/mhq-test/other.pem",
    "integrations.gitlab.repositories": 5,
    "integrations.bitbucket.access_token": ["bbtoken-listed-secret"],
    "integrations.bitbucket.workspace_name": [],
    "integrations.bitbucket.api_url": "api.bitbucket.org/2.0",
    "integrations.bitbucket.repositories": '["https://bitbucket.org/acme/app", 1]',
    "schedule.fetch": "0 */6 * * * *",
    "schedule.push": "",
    "schedule.heartbeat": 5,
    "schedule.timezone": "Europe/Atlantis",
    "sync.initial_days": -1,
    "integrations.bitbucket.requests_per_hour": -5,
    "integrations.gitlab.requests_per_minute": 1.5,
    "retention.delivered_days": "a week",
    "retention.job_runs_days": True,
    "privacy.pseudonym_key": {"key": "pseudo-secret-xyz"},
    "privacy.titles": True,
    "privacy.branch_names": "",
    "privacy.repository_names": 1,
    "http.max_concurrency": "four",
    "http.timeout_s": 0,
    "http.retry_budget_s": 0,
    "push.max_batch_records": False,
    "push.max_batch_bytes": -1,
    "push.retry_budget_s": [],
    "log.format": "yaml",
    "log.level": "verbose",
}

# Parts of secret values that must not show up in an error message.
SECRET_FRAGMENTS: dict[str, str] = {
    "database_url": "hunter2",
    "integrations.gitlab.access_token": "918273645",
    "integrations.bitbucket.access_token": "bbtoken-listed-secret",
    "privacy.pseudonym_key": "pseudo-secret-xyz",
    "mhq.client_secret": "secret-value",
}

SECRET_PATHS = sorted(key.path for key in KEYS if key.kind is Kind.SECRET)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder, so a ./config.json elsewhere is never picked up."""
    monkeypatch.chdir(tmp_path)


def nested(path: str, value: Any) -> dict[str, Any]:
    """Turn ``a.b.c`` and a value into ``{"a": {"b": {"c": value}}}``."""
    document: Any = value
    for part in reversed(path.split(".")):
        document = {part: document}
    return document


def write_config(folder: Path, document: Any, name: str = "config.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def load(
    environ: dict[str, str] | None = None,
    config_path: Path | None = None,
    flags: dict[str, Any] | None = None,
) -> Settings:
    return load_settings(
        LoadOptions(
            environ=environ or {},
            config_path=str(config_path) if config_path else None,
            flags=flags or {},
        )
    )


def whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


# -- the tables cover every key ------------------------------------------------------


def test_env_table_covers_every_key() -> None:
    assert set(ENV_INVALID) | set(ENV_ALWAYS_VALID) == ALL_PATHS


def test_env_table_has_no_overlap() -> None:
    assert not set(ENV_INVALID) & set(ENV_ALWAYS_VALID)


def test_file_table_covers_every_key() -> None:
    assert set(FILE_INVALID) == ALL_PATHS


def test_env_always_valid_keys_accept_text() -> None:
    environ = {
        KEYS_BY_PATH[path].env: "plain-text-value"
        for path in ENV_ALWAYS_VALID
        if KEYS_BY_PATH[path].env
    }

    settings = load(environ)

    for path in ENV_ALWAYS_VALID:
        if KEYS_BY_PATH[path].env:
            assert settings.get(path) == "plain-text-value", path


# -- invalid values name the key and the source --------------------------------------


@pytest.mark.parametrize("path", sorted(ENV_INVALID))
def test_env_invalid_value(path: str) -> None:
    env_name = KEYS_BY_PATH[path].env
    assert env_name is not None

    with pytest.raises(ConfigError) as caught:
        load({env_name: ENV_INVALID[path]})

    assert caught.value.key == path
    assert path in str(caught.value)
    assert f"environment {env_name}" in str(caught.value)


@pytest.mark.parametrize("path", sorted(FILE_INVALID))
def test_file_invalid_value(path: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, nested(path, FILE_INVALID[path]))

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert caught.value.key == path
    assert path in str(caught.value)
    assert f"config file {config}" in str(caught.value)


@pytest.mark.parametrize("path", [path for path in SECRET_PATHS if path in ENV_INVALID])
def test_env_invalid_secret_hidden(path: str) -> None:
    value = ENV_INVALID[path]

    with pytest.raises(ConfigError) as caught:
        load({KEYS_BY_PATH[path].env or "": value})

    assert value not in str(caught.value)
    assert SECRET_FRAGMENTS.get(path, value) not in str(caught.value)


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_file_invalid_secret_hidden(path: str, tmp_path: Path) -> None:
    value = FILE_INVALID[path]
    config = write_config(tmp_path, nested(path, value))

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert str(value) not in str(caught.value)
    assert SECRET_FRAGMENTS[path] not in str(caught.value)


def test_flag_invalid_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags={"schedule.fetch": "often"})

    assert caught.value.key == "schedule.fetch"
    assert "command-line flag schedule.fetch" in str(caught.value)


@pytest.mark.parametrize("env_name", ["GITLAB_ACCESS_TOKEN", "BITBUCKET_ACCESS_TOKEN"])
def test_env_token_with_line_break(env_name: str) -> None:
    with pytest.raises(ConfigError):
        load({env_name: "glpat-first-half\nsecond-half"})


# -- precedence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "expected", "expected_source"),
    [
        pytest.param(
            ("flag", "env", "file"),
            1,
            "command-line flag sync.initial_days",
            id="flag-wins",
        ),
        pytest.param(
            ("env", "file"), 2, "environment INITIAL_SYNC_DAYS", id="env-over-file"
        ),
        pytest.param(("file",), 3, "config file", id="file-over-default"),
        pytest.param((), 90, "default", id="default"),
    ],
)
def test_precedence(
    sources: tuple[str, ...], expected: int, expected_source: str, tmp_path: Path
) -> None:
    flags = {"sync.initial_days": 1} if "flag" in sources else {}
    environ = {"INITIAL_SYNC_DAYS": "2"} if "env" in sources else {}
    # Not named config.json, which the loader would pick up from the folder itself.
    config = write_config(tmp_path, {"sync": {"initial_days": 3}}, "settings.json")

    settings = load(environ, config if "file" in sources else None, flags)

    assert settings.get("sync.initial_days") == expected
    assert settings.sources["sync.initial_days"].startswith(expected_source)


def test_blank_env_value_is_unset(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"schedule": {"fetch": "15 * * * *"}})

    settings = load({"FETCH_SCHEDULE": "   "}, config)

    assert settings.get("schedule.fetch") == "15 * * * *"


def test_mhq_config_env_names_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"sync": {"initial_days": 7}}, "other.json")

    settings = load({"MHQ_CONFIG": str(config)})

    assert settings.get("sync.initial_days") == 7


def test_default_config_json_in_cwd(tmp_path: Path) -> None:
    write_config(tmp_path, {"sync": {"initial_days": 11}})

    settings = load()

    assert settings.get("sync.initial_days") == 11


# -- the config file -----------------------------------------------------------------


def test_earlier_agent_layout_loads(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "integrations": {
                "gitlab": {
                    "repositories": [
                        "https://gitlab.example.com/acme/api",
                        "https://gitlab.example.com/acme/web",
                    ]
                },
                "bitbucket": {
                    "workspace_name": "acme",
                    "repositories": ["https://bitbucket.org/acme/app"],
                },
            }
        },
    )

    settings = load(config_path=config)

    assert settings.gitlab.repositories == (
        "https://gitlab.example.com/acme/api",
        "https://gitlab.example.com/acme/web",
    )
    assert settings.gitlab.domain_url == "https://gitlab.com"
    assert settings.bitbucket.workspace_name == "acme"
    assert settings.bitbucket.repositories == ("https://bitbucket.org/acme/app",)
    assert settings.warnings == ()


def test_unknown_keys_are_warnings(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "integrations": {
                "github": {"access_token": "ghp-unknown-secret"},
                "gitlab": {"repositories": ["https://gitlab.example.com/acme/api"]},
            },
            "mhq": {"webhok_url": "https://mhq.example.com/hook"},
            "legacy_flag": True,
        },
    )

    settings = load(config_path=config)
    warnings = "\n".join(settings.warnings)

    assert len(settings.warnings) == 3
    assert "integrations.github.access_token" in warnings
    assert "mhq.webhok_url" in warnings
    assert "legacy_flag" in warnings
    assert str(config) in warnings
    assert "ghp-unknown-secret" not in warnings
    assert settings.gitlab.repositories == ("https://gitlab.example.com/acme/api",)


def test_invalid_json_names_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"mhq": {"client_id": "a",}}', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert f"config file {config}" in str(caught.value)
    assert "not valid JSON" in str(caught.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    config = tmp_path / "missing.json"

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert f"config file {config}" in str(caught.value)
    assert "cannot be read" in str(caught.value)


def test_missing_mhq_config_file(tmp_path: Path) -> None:
    config = tmp_path / "absent.json"

    with pytest.raises(ConfigError) as caught:
        load({"MHQ_CONFIG": str(config)})

    assert f"config file {config}" in str(caught.value)


def test_top_level_array_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["https://gitlab.example.com/acme/api"])

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert f"config file {config}" in str(caught.value)
    assert "JSON object" in str(caught.value)


# -- lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(["https://a.example/x", "https://a.example/y"], 2, id="array"),
        pytest.param(
            '["https://a.example/x", "https://a.example/y"]', 2, id="json-text"
        ),
        pytest.param("https://a.example/x, https://a.example/y", 2, id="comma-text"),
        pytest.param("https://a.example/x,, https://a.example/y ,", 2, id="blanks"),
        pytest.param("https://a.example/x", 1, id="single"),
    ],
)
def test_list_forms(raw: Any, expected: int, tmp_path: Path) -> None:
    config = write_config(tmp_path, nested("integrations.gitlab.repositories", raw))

    repositories = load(config_path=config).gitlab.repositories

    assert len(repositories) == expected
    assert repositories[0] == "https://a.example/x"
    assert repositories[-1] == (
        "https://a.example/y" if expected == 2 else "https://a.example/x"
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('["https://a.example/x", 1]', id="json-non-string"),
        pytest.param('["https://a.example/x"', id="json-broken"),
        pytest.param('[{"url": "x"}]', id="json-objects"),
        pytest.param({"url": "https://a.example/x"}, id="object"),
    ],
)
def test_list_invalid(raw: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, nested("integrations.gitlab.repositories", raw))

    with pytest.raises(ConfigError) as caught:
        load(config_path=config)

    assert caught.value.key == "integrations.gitlab.repositories"


# -- URLs: plain http only to loopback -----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://mhq.example.com/hook", id="https"),
        pytest.param("http://127.0.0.1:8080/hook", id="ipv4-loopback"),
        pytest.param("http://127.0.0.2/hook", id="ipv4-loopback-net"),
        pytest.param("http://localhost/hook", id="localhost"),
        pytest.param("http://[::1]:9000/hook", id="ipv6-loopback"),
    ],
)
def test_webhook_url_allowed(url: str) -> None:
    settings = load({"MHQ_WEBHOOK_URL": url})

    assert settings.get("mhq.webhook_url") == url


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://mhq.example.com/hook", id="http-public-name"),
        pytest.param("http://10.0.0.5/hook", id="http-private-ip"),
        pytest.param("http://0.0.0.0/hook", id="http-any-address"),
        pytest.param("http://localhost.example.com/hook", id="http-localhost-prefix"),
        pytest.param("http://127.0.0.1.example.com/hook", id="http-ip-prefix"),
        pytest.param("ftp://127.0.0.1/hook", id="ftp"),
        pytest.param("https:///hook", id="no-host"),
    ],
)
def test_webhook_url_rejected(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"MHQ_WEBHOOK_URL": url})

    assert caught.value.key == "mhq.webhook_url"


# -- client secret -------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(whsec(32), id="32-bytes"),
        pytest.param(whsec(16), id="16-bytes"),
    ],
)
def test_client_secret_valid(secret: str) -> None:
    settings = load({"MHQ_CLIENT_SECRET": secret})

    assert settings.get("mhq.client_secret") == secret


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(whsec(32).removeprefix("whsec_"), id="no-prefix"),
        pytest.param("whsec_!!not-base64-at-all!!", id="not-base64"),
        pytest.param(whsec(8), id="too-short"),
        pytest.param("WHSEC_" + whsec(32).removeprefix("whsec_"), id="upper-prefix"),
    ],
)
def test_client_secret_invalid(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"MHQ_CLIENT_SECRET": secret})

    assert caught.value.key == "mhq.client_secret"
    assert secret not in str(caught.value)


# -- MHQ public key ------------------------------------------------------------------


def ec_public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def test_public_key_rsa_2048(receiver_keys: ReceiverKeys) -> None:
    settings = load({"MHQ_PUBLIC_KEY": receiver_keys.public_pem})

    assert settings.get("mhq.public_key") == receiver_keys.public_pem.strip()


def test_public_key_escaped_newlines(receiver_keys: ReceiverKeys) -> None:
    one_line = receiver_keys.public_pem.strip().replace("\n", "\\n")

    settings = load({"MHQ_PUBLIC_KEY": one_line})

    assert settings.get("mhq.public_key") == one_line


def test_public_key_rsa_1024() -> None:
    _, public_pem = make_rsa_keypair(1024)

    with pytest.raises(ConfigError) as caught:
        load({"MHQ_PUBLIC_KEY": public_pem})

    assert caught.value.key == "mhq.public_key"
    assert "1024" in str(caught.value)


def test_public_key_ec() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"MHQ_PUBLIC_KEY": ec_public_pem()})

    assert caught.value.key == "mhq.public_key"
    assert "RSA" in str(caught.value)


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("garbage", id="text"),
        pytest.param(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", id="bad-body"
        ),
        pytest.param(
            "-----BEGIN PUBLIC KEY-----\nÄÖÜ\n-----END PUBLIC KEY-----", id="non-ascii"
        ),
    ],
)
def test_public_key_garbage(pem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"MHQ_PUBLIC_KEY": pem})

    assert caught.value.key == "mhq.public_key"
    assert "PEM" in str(caught.value)


def test_public_key_private_pem(receiver_keys: ReceiverKeys) -> None:
    private_pem = receiver_keys.private_pem.decode("ascii")

    with pytest.raises(ConfigError) as caught:
        load({"MHQ_PUBLIC_KEY": private_pem})

    assert caught.value.key == "mhq.public_key"
    assert "PRIVATE KEY" not in str(caught.value)


# -- require() -----------------------------------------------------------------------


def test_require_names_every_source() -> None:
    settings = load()

    with pytest.raises(ConfigError) as caught:
        settings.require("integrations.gitlab.access_token")
    message = str(caught.value)

    assert caught.value.key == "integrations.gitlab.access_token"
    assert "environment variable GITLAB_ACCESS_TOKEN" in message
    assert "config.json key integrations.gitlab.access_token" in message
    assert "SSM parameter <prefix>/gitlab/access_token" in message


def test_require_list_without_env() -> None:
    settings = load()

    with pytest.raises(ConfigError) as caught:
        settings.require("integrations.gitlab.repositories")
    message = str(caught.value)

    assert "config.json key integrations.gitlab.repositories" in message
    assert "SSM parameter <prefix>/gitlab/repositories" in message
    assert "environment variable" not in message


def test_require_first_missing_named() -> None:
    settings = load({"MHQ_CLIENT_ID": "client-a"})

    with pytest.raises(ConfigError) as caught:
        settings.require("mhq.client_id", "mhq.webhook_url")

    assert caught.value.key == "mhq.webhook_url"


def test_require_passes_when_set() -> None:
    settings = load({"MHQ_CLIENT_ID": "client-a"})

    assert settings.require("mhq.client_id") is None


# -- secrets list --------------------------------------------------------------------


def test_secrets_lists_secret_values() -> None:
    settings = load(
        {"GITLAB_ACCESS_TOKEN": "glpat-listed", "MHQ_CLIENT_ID": "client-public"}
    )

    assert "glpat-listed" in settings.secrets
    assert "client-public" not in settings.secrets


@pytest.mark.parametrize(
    "variable", ["GITLAB_DOMAIN_URL", "BITBUCKET_API_URL"], ids=["gitlab", "bitbucket"]
)
def test_provider_url_with_password_rejected(variable: str) -> None:
    environ = {variable: "https://robot:hunter2-secret@code.example.com"}

    with pytest.raises(ConfigError) as raised:
        load_settings(LoadOptions(environ=environ))

    assert f"environment {variable}" in str(raised.value)
    assert "hunter2-secret" not in str(raised.value)
