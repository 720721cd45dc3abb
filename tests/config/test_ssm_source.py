"""The SSM Parameter Store source against moto in process, so no request leaves."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from agent.config.settings import LoadOptions, load_settings
from agent.config.ssm import SsmSource
from agent.errors import ConfigError

PREFIX = "/mhq-agent"
TOKEN = "glpat-secret-value-1"
# moto checks region names against the real list, so the fake account uses a real name.
REGION = "eu-west-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Strip real AWS settings so that nothing can reach AWS or instance metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "MHQ_SSM_PREFIX":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def ssm(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def put(client: Any, name: str, value: str, kind: str = "String") -> None:
    client.put_parameter(
        Name=f"{PREFIX}/{name}", Value=value, Type=kind, Overwrite=True
    )


def load(**environ: str) -> Any:
    return load_settings(
        LoadOptions(ssm_prefix=PREFIX, environ={"MHQ_SSM_PREFIX": PREFIX, **environ})
    )


def test_secure_string_is_decrypted(ssm: Any) -> None:
    put(ssm, "gitlab/access_token", TOKEN, "SecureString")

    values = SsmSource(PREFIX).load()

    value = values["integrations.gitlab.access_token"]
    assert value.raw == TOKEN
    assert value.source == f"SSM parameter {PREFIX}/gitlab/access_token"


def test_nested_names_map_to_config_paths(ssm: Any) -> None:
    put(ssm, "mhq/webhook_url", "https://mhq.example.com/hooks/agent")
    put(ssm, "gitlab/domain_url", "https://gitlab.example.com/code")
    put(ssm, "schedule/fetch", "15 */4 * * *")
    put(ssm, "sync/initial_days", "30")
    put(ssm, "database_url", "postgresql://mhq:pw@db:5432/mhq", "SecureString")

    values = SsmSource(PREFIX).load()

    assert values["mhq.webhook_url"].raw == "https://mhq.example.com/hooks/agent"
    assert values["integrations.gitlab.domain_url"].raw == (
        "https://gitlab.example.com/code"
    )
    assert values["schedule.fetch"].raw == "15 */4 * * *"
    assert values["sync.initial_days"].raw == "30"
    assert values["database_url"].source == f"SSM parameter {PREFIX}/database_url"


def test_unknown_names_are_listed_not_loaded(ssm: Any) -> None:
    put(ssm, "gitlab/access_token", TOKEN, "SecureString")
    put(ssm, "gitlab/extra/deeper", "x")
    put(ssm, "legacy_setting", "y")
    ssm.put_parameter(
        Name=f"{PREFIX}-other/gitlab/access_token", Value="z", Type="String"
    )
    ssm.put_parameter(Name="/elsewhere/mhq/client_id", Value="z", Type="String")
    source = SsmSource(PREFIX)

    values = source.load()

    assert set(values) == {"integrations.gitlab.access_token"}
    assert sorted(source.unknown_names) == [
        f"{PREFIX}/gitlab/extra/deeper",
        f"{PREFIX}/legacy_setting",
    ]


def test_string_list_stays_comma_text(ssm: Any) -> None:
    repositories = "https://gitlab.example.com/a/b,https://gitlab.example.com/c"
    put(ssm, "gitlab/repositories", repositories, "StringList")

    raw = SsmSource(PREFIX).load()["integrations.gitlab.repositories"].raw
    settings = load()

    assert raw == repositories
    assert settings.gitlab.repositories == (
        "https://gitlab.example.com/a/b",
        "https://gitlab.example.com/c",
    )


def test_json_array_passes_as_text(ssm: Any) -> None:
    urls = ["https://bitbucket.org/team/one", "https://bitbucket.org/team/two"]
    put(ssm, "bitbucket/repositories", json.dumps(urls))

    raw = SsmSource(PREFIX).load()["integrations.bitbucket.repositories"].raw
    settings = load()

    assert raw == json.dumps(urls)
    assert settings.bitbucket.repositories == tuple(urls)


def test_pages_are_followed(ssm: Any) -> None:
    # moto returns 10 parameters a page, as SSM does by default.
    names = [
        "mhq/webhook_url",
        "mhq/heartbeat_url",
        "mhq/client_id",
        "mhq/agent_id",
        "gitlab/domain_url",
        "bitbucket/workspace_name",
        "bitbucket/api_url",
        "schedule/fetch",
        "schedule/push",
        "schedule/heartbeat",
        "schedule/timezone",
        "sync/initial_days",
    ]
    for name in names:
        put(ssm, name, "value")

    values = SsmSource(PREFIX).load()

    assert len(values) == len(names)


def test_next_token_is_sent_back() -> None:
    client = PagedClient(
        [
            {"Parameters": [param("mhq/client_id", "c-1")], "NextToken": "page-2"},
            {"Parameters": [param("mhq/agent_id", "a-1")]},
        ]
    )

    values = SsmSource(PREFIX, client=client).load()

    assert values["mhq.client_id"].raw == "c-1"
    assert values["mhq.agent_id"].raw == "a-1"
    assert client.requests[0] == {
        "Path": PREFIX,
        "Recursive": True,
        "WithDecryption": True,
    }
    assert client.requests[1]["NextToken"] == "page-2"


def test_missing_parameter_falls_back(ssm: Any, tmp_path: Path) -> None:
    put(ssm, "gitlab/access_token", TOKEN, "SecureString")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"integrations": {"bitbucket": {"workspace_name": "team"}}}),
        encoding="utf-8",
    )

    settings = load(MHQ_CONFIG=str(config))

    assert settings.gitlab.access_token == TOKEN
    assert settings.bitbucket.workspace_name == "team"
    assert settings.sources["integrations.bitbucket.workspace_name"] == (
        f"config file {config}"
    )
    assert settings.get("schedule.fetch") == "0 */6 * * *"
    assert settings.sources["schedule.fetch"] == "default"


def test_environment_beats_ssm(ssm: Any) -> None:
    put(ssm, "gitlab/access_token", TOKEN, "SecureString")

    settings = load(GITLAB_ACCESS_TOKEN="from-environment")

    assert settings.gitlab.access_token == "from-environment"
    assert settings.sources["integrations.gitlab.access_token"] == (
        "environment GITLAB_ACCESS_TOKEN"
    )


def test_edit_applies_on_next_load(ssm: Any) -> None:
    put(ssm, "gitlab/access_token", TOKEN, "SecureString")
    first = load()

    put(ssm, "gitlab/access_token", "glpat-rotated-value-2", "SecureString")
    second = load()

    assert first.gitlab.access_token == TOKEN
    assert second.gitlab.access_token == "glpat-rotated-value-2"


def test_invalid_value_names_parameter(ssm: Any) -> None:
    put(ssm, "schedule/fetch", "every six hours")

    with pytest.raises(ConfigError) as caught:
        load()

    assert caught.value.key == "schedule.fetch"
    assert caught.value.source == f"SSM parameter {PREFIX}/schedule/fetch"


@set_initial_no_auth_action_count(4)
def test_access_denied_names_prefix(aws_env: None) -> None:
    with mock_aws():
        key = _user_without_ssm_access()
        put(boto3.client("ssm"), "gitlab/access_token", TOKEN, "SecureString")
        client = boto3.client(
            "ssm",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )

        with pytest.raises(ConfigError) as caught:
            SsmSource(PREFIX, client=client).load()

    error = caught.value
    assert error.key == "--ssm-prefix"
    assert error.source == f"SSM path {PREFIX}"
    assert "ssm:GetParametersByPath" in str(error)
    assert "kms:Decrypt" in str(error)
    assert TOKEN not in str(error)
    assert error.__cause__ is not None


def test_missing_region_is_reported(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    source = SsmSource(PREFIX)

    with pytest.raises(ConfigError) as caught:
        source.load()

    assert "AWS_REGION" in caught.value.problem
    assert caught.value.source == f"SSM path {PREFIX}"


def test_missing_credentials_are_reported(aws_env: None) -> None:
    # Outside mock_aws, with metadata disabled, botocore finds no credentials and
    # fails before it sends anything.
    with pytest.raises(ConfigError) as caught:
        SsmSource(PREFIX).load()

    assert "no AWS credentials" in caught.value.problem
    assert "instance role" in caught.value.problem


@pytest.mark.parametrize(
    ("given", "expected"),
    [("mhq-agent", "/mhq-agent"), ("/mhq-agent/", "/mhq-agent"), ("/a/b", "/a/b")],
    ids=["no-leading-slash", "trailing-slash", "nested"],
)
def test_prefix_is_normalised(given: str, expected: str) -> None:
    assert SsmSource(given, client=PagedClient([])).prefix == expected


def test_root_prefix_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        SsmSource("/")

    assert caught.value.key == "--ssm-prefix"


class PagedClient:
    """Stand-in SSM client that serves given pages and records each request."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self._pages = iter(pages)
        self.requests: list[dict[str, Any]] = []

    def get_parameters_by_path(self, **request: Any) -> dict[str, Any]:
        self.requests.append(dict(request))
        return next(self._pages)


def param(name: str, value: str) -> dict[str, str]:
    return {"Name": f"{PREFIX}/{name}", "Type": "String", "Value": value}


def _user_without_ssm_access() -> dict[str, str]:
    """Create a moto IAM user that may read single parameters but not a path."""
    iam = boto3.client("iam")
    iam.create_user(UserName="agent")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}
        ],
    }
    iam.put_user_policy(
        UserName="agent", PolicyName="single", PolicyDocument=json.dumps(policy)
    )
    return iam.create_access_key(UserName="agent")["AccessKey"]


def test_unknown_names_become_warnings(ssm: Any) -> None:
    put(ssm, "gitlab/acces_token", TOKEN, "SecureString")

    settings = load()

    assert settings.warnings == (
        f"unknown SSM parameter {PREFIX}/gitlab/acces_token is ignored",
    )
    assert settings.get("integrations.gitlab.access_token") is None
