"""Deploy-time settings: defaults, context over file, and rejected values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import DeployConfigError, DeploySettings, load_deploy_settings


def load(context: dict[str, Any], base_dir: Path | None = None) -> DeploySettings:
    return load_deploy_settings(context.get, base_dir=base_dir)


def test_defaults() -> None:
    settings = load({})

    assert settings.instance_type == "t2.micro"
    assert settings.root_volume_gb == 8
    assert settings.parameter_prefix == "/mhq-agent"
    assert settings.builds_agent_image
    assert settings.vpc_id is None
    assert settings.log_retention_days == 30
    assert settings.egress_ports == (443,)
    assert settings.agent_settings == {}


def test_context_overrides_file(tmp_path: Path) -> None:
    (tmp_path / "deploy.json").write_text(
        json.dumps({"instanceType": "t3.small", "rootVolumeGb": 20}), encoding="utf-8"
    )

    settings = load({"config": "deploy.json", "instanceType": "t3.micro"}, tmp_path)

    assert settings.instance_type == "t3.micro"
    assert settings.root_volume_gb == 20


def test_example_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "infra" / "deploy.example.json"

    settings = load({"config": str(example)})

    assert settings.agent_settings["gitlab/repositories"].startswith('["https://')
    assert "mhq/webhook_url" in settings.agent_settings


def test_agent_settings_as_json_text() -> None:
    settings = load({"agentSettings": '{"schedule/fetch": "0 * * * *"}'})

    assert settings.agent_settings == {"schedule/fetch": "0 * * * *"}


def test_prefix_is_normalised() -> None:
    assert load({"parameterPrefix": "team/mhq/"}).parameter_prefix == "/team/mhq"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"instanceType": "micro"}, "instanceType"),
        ({"rootVolumeGb": "4"}, "rootVolumeGb 4 is out of range"),
        ({"parameterPrefix": "/aws/mhq"}, "reserved"),
        ({"parameterPrefix": "/mhq agent"}, "parameterPrefix"),
        ({"logRetentionDays": 10}, "not accepted by CloudWatch Logs"),
        ({"vpcId": "default"}, "vpcId"),
        ({"egressPorts": "443,http"}, "egressPorts"),
        ({"agentImage": "image'; rm -rf /"}, "agentImage"),
        ({"agentSettings": {"gitlab/access_token": "x"}}, "is a secret"),
        ({"agentSettings": {"database_url": "postgresql://x"}}, "is a secret"),
        ({"agentSettings": {"gitlab/unknown": "x"}}, "unknown name"),
        ({"agentSettings": {"gitlab/repositories": "a,b"}}, "list of strings"),
        ({"agentSettings": {"schedule/fetch": " "}}, "is empty"),
        ({"agentSettings": {"mhq/client_id": "x" * 5000}}, "4096"),
    ],
    ids=[
        "instance-type",
        "volume-too-small",
        "reserved-prefix",
        "prefix-with-space",
        "retention",
        "vpc-id",
        "port",
        "image-with-quote",
        "secret-token",
        "secret-database-url",
        "unknown-setting",
        "list-as-text",
        "empty-setting",
        "value-too-long",
    ],
)
def test_invalid_setting_is_rejected(context: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployConfigError, match=message):
        load(context)


def test_unknown_file_key_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "deploy.json").write_text('{"instancetype": "t3.micro"}')

    with pytest.raises(DeployConfigError, match="unknown keys"):
        load({"config": "deploy.json"}, tmp_path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DeployConfigError, match="cannot be read"):
        load({"config": "absent.json"}, tmp_path)
