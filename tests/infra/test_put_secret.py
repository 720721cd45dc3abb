"""scripts/put-secret against moto in process: SecureString, overwrite, no echo."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.infra.support import REPO_ROOT

TOKEN = "glpat-put-secret-value"
REGION = "eu-west-1"


def load_script() -> ModuleType:
    path = REPO_ROOT / "scripts" / "put-secret"
    loader = SourceFileLoader("put_secret", str(path))
    spec = spec_from_loader("put_secret", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


put_secret = load_script()


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def run(*argv: str, value: str = TOKEN + "\n") -> int:
    return put_secret.main([*argv, "--region", REGION], stdin=io.StringIO(value))


def stored(ssm: Any, name: str) -> dict[str, Any]:
    return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]


def test_writes_secure_string(ssm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status = run("gitlab/access_token")

    parameter = stored(ssm, "/mhq-agent/gitlab/access_token")
    output = capsys.readouterr()

    assert status == 0
    assert parameter["Type"] == "SecureString"
    assert parameter["Value"] == TOKEN
    assert "stored SecureString /mhq-agent/gitlab/access_token" in output.out
    assert TOKEN not in output.out + output.err


def test_existing_needs_overwrite(ssm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run("gitlab/access_token", "--prefix", "/team/mhq/")

    refused = run("gitlab/access_token", "--prefix", "/team/mhq", value="second")
    error = capsys.readouterr().err
    replaced = run(
        "gitlab/access_token", "--prefix", "/team/mhq", "--overwrite", value="third"
    )

    assert refused == 1
    assert "pass --overwrite" in error
    assert "second" not in error
    assert replaced == 0
    assert stored(ssm, "/team/mhq/gitlab/access_token")["Value"] == "third"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("gitlab/acces_token", TOKEN, "not an agent setting"),
        ("gitlab/access_token", "\n", "empty"),
        ("gitlab/access_token", "x" * 5000, "pass --advanced"),
    ],
    ids=["unknown-name", "empty-value", "too-long"],
)
def test_rejected_input(
    ssm: Any, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    status = run(name, value=value)

    assert status == 2
    assert message in capsys.readouterr().err
    assert ssm.describe_parameters()["Parameters"] == []


def test_value_never_from_arguments() -> None:
    with pytest.raises(SystemExit):
        put_secret.parse_args(["gitlab/access_token", TOKEN])
