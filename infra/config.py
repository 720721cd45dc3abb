"""Deploy-time settings of the agent stack, read from CDK context or a JSON file.

Precedence: ``cdk -c key=value`` (and the ``context`` block of cdk.json), then the JSON
file named by ``-c config=PATH``, then the defaults below. Every setting is checked at
synth time so that a typo fails ``cdk synth`` instead of a half-made deployment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.keys import KEYS_BY_SSM, Kind

DEFAULT_STACK_NAME = "MhqAgent"
DEFAULT_INSTANCE_TYPE = "t2.micro"
DEFAULT_ROOT_VOLUME_GB = 8
DEFAULT_PARAMETER_PREFIX = "/mhq-agent"
DEFAULT_LOG_RETENTION_DAYS = 30
# The agent image is built from the repository's Dockerfile unless a URI is given.
AGENT_IMAGE_FROM_ASSET = "asset"
# The official postgres image through ECR Public, which needs no login and has no
# Docker Hub pull limit. NOTE: this is a tag, not a digest, so upstream can rebuild
# the image behind it. The tag follows the official naming, but no registry here can
# confirm that it exists.
DEFAULT_POSTGRES_IMAGE = "public.ecr.aws/docker/library/postgres:16.10-bookworm"
# A t2.micro has 1 GiB of memory. 1 GiB of swap lets a fetch peak page out instead of
# waking the OOM killer.
DEFAULT_SWAP_MB = 1024

STANDARD_PARAMETER_MAX_BYTES = 4096

# Values that CloudWatch Logs accepts for RetentionInDays.
LOG_RETENTION_CHOICES = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

# SSM names allow letters, digits and . - _ / and 15 levels, so the prefix keeps to 10
# and leaves room for the agent's names below it (gitlab/access_token is 2).
_PREFIX_PATTERN = re.compile(r"^(/[A-Za-z0-9_.\-]+){1,10}$")
_VPC_ID_PATTERN = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9\-]*\.[a-z0-9]+$")
# Characters that need no escaping inside the single-quoted exports of the user data.
_SHELL_SAFE_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@\-]+$")

CONTEXT_KEYS = (
    "config",
    "stackName",
    "instanceType",
    "rootVolumeGb",
    "parameterPrefix",
    "agentImage",
    "postgresImage",
    "vpcId",
    "logRetentionDays",
    "swapMb",
    "egressPorts",
    "agentSettings",
)


class DeployConfigError(ValueError):
    """A deploy-time setting is invalid. The message names the setting and the fix."""


@dataclass(frozen=True)
class DeploySettings:
    """Every deploy-time choice of the stack, validated."""

    stack_name: str = DEFAULT_STACK_NAME
    instance_type: str = DEFAULT_INSTANCE_TYPE
    root_volume_gb: int = DEFAULT_ROOT_VOLUME_GB
    parameter_prefix: str = DEFAULT_PARAMETER_PREFIX
    agent_image: str = AGENT_IMAGE_FROM_ASSET
    postgres_image: str = DEFAULT_POSTGRES_IMAGE
    vpc_id: str | None = None
    log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS
    swap_mb: int = DEFAULT_SWAP_MB
    # Outbound TCP ports; a code host on a port other than 443 needs its port here.
    egress_ports: tuple[int, ...] = (443,)
    # Non-secret agent settings by SSM name below the prefix, e.g. "mhq/webhook_url".
    agent_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def builds_agent_image(self) -> bool:
        return self.agent_image == AGENT_IMAGE_FROM_ASSET


def load_deploy_settings(
    context: Callable[[str], Any], base_dir: Path | None = None
) -> DeploySettings:
    """Build DeploySettings from ``context`` (``node.try_get_context``) and its file.

    Raises DeployConfigError naming the first invalid setting.
    """
    merged: dict[str, Any] = {}
    file_name = context("config")
    if file_name:
        merged.update(_read_file(Path(base_dir or Path.cwd()) / str(file_name)))
    for key in CONTEXT_KEYS:
        value = context(key)
        if value is not None and key != "config":
            merged[key] = value
    return _parse(merged)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployConfigError(
            f"deploy config file {path} cannot be read ({exc.strerror})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DeployConfigError(
            f"deploy config file {path} is not valid JSON "
            f"(line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(document, dict):
        raise DeployConfigError(f"deploy config file {path} must contain a JSON object")
    unknown = sorted(set(document) - set(CONTEXT_KEYS) - {"config"})
    if unknown:
        raise DeployConfigError(
            f"deploy config file {path} has unknown keys {unknown}; "
            f"known keys are {list(CONTEXT_KEYS[1:])}"
        )
    return document


def _parse(raw: Mapping[str, Any]) -> DeploySettings:
    defaults = DeploySettings()
    return DeploySettings(
        stack_name=_stack_name(raw.get("stackName", defaults.stack_name)),
        instance_type=_instance_type(raw.get("instanceType", defaults.instance_type)),
        root_volume_gb=_integer(
            "rootVolumeGb", raw.get("rootVolumeGb", defaults.root_volume_gb), 8, 16384
        ),
        parameter_prefix=_prefix(raw.get("parameterPrefix", defaults.parameter_prefix)),
        agent_image=_image("agentImage", raw.get("agentImage", defaults.agent_image)),
        postgres_image=_image(
            "postgresImage", raw.get("postgresImage", defaults.postgres_image)
        ),
        vpc_id=_vpc_id(raw.get("vpcId")),
        log_retention_days=_retention(
            raw.get("logRetentionDays", defaults.log_retention_days)
        ),
        swap_mb=_integer("swapMb", raw.get("swapMb", defaults.swap_mb), 0, 8192),
        egress_ports=_ports(raw.get("egressPorts", defaults.egress_ports)),
        agent_settings=_agent_settings(raw.get("agentSettings", {})),
    )


def _stack_name(value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9\-]{0,127}", text):
        raise DeployConfigError(
            f"stackName {text!r} is invalid; use letters, digits and '-', "
            "starting with a letter"
        )
    return text


def _instance_type(value: Any) -> str:
    text = str(value).strip()
    if not _INSTANCE_TYPE_PATTERN.fullmatch(text):
        raise DeployConfigError(
            f"instanceType {text!r} is not an EC2 instance type such as t2.micro"
        )
    return text


def _integer(name: str, value: Any, minimum: int, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DeployConfigError(f"{name} {value!r} is not a whole number") from None
    if not minimum <= number <= maximum:
        raise DeployConfigError(
            f"{name} {number} is out of range; give {minimum} to {maximum}"
        )
    return number


def _prefix(value: Any) -> str:
    text = "/" + str(value).strip().strip("/")
    if not _PREFIX_PATTERN.fullmatch(text):
        raise DeployConfigError(
            f"parameterPrefix {value!r} is invalid; use a path such as /mhq-agent made "
            "of letters, digits, '.', '-' and '_'"
        )
    if text.lower().startswith(("/aws", "/ssm")):
        raise DeployConfigError(
            f"parameterPrefix {text!r} is reserved by AWS; choose another first level"
        )
    return text


def _image(name: str, value: Any) -> str:
    text = str(value).strip()
    if not _SHELL_SAFE_PATTERN.fullmatch(text):
        raise DeployConfigError(
            f"{name} {text!r} is not an image URI such as "
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mhq-agent:1.0"
        )
    return text


def _vpc_id(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not _VPC_ID_PATTERN.fullmatch(text):
        raise DeployConfigError(f"vpcId {text!r} is not a VPC id such as vpc-0abc1234")
    return text


def _ports(value: Any) -> tuple[int, ...]:
    # Context given on the command line arrives as text, such as "443,8443".
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise DeployConfigError(
            f"egressPorts {value!r} must be a list of TCP ports such as [443]"
        )
    ports = tuple(_integer("egressPorts", item, 1, 65535) for item in items)
    return tuple(sorted(set(ports)))


def _retention(value: Any) -> int:
    number = _integer("logRetentionDays", value, 1, 3653)
    if number not in LOG_RETENTION_CHOICES:
        raise DeployConfigError(
            f"logRetentionDays {number} is not accepted by CloudWatch Logs; "
            f"choose one of {list(LOG_RETENTION_CHOICES)}"
        )
    return number


def _agent_settings(value: Any) -> dict[str, str]:
    """Check each setting by its SSM name and render it as a String parameter value."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DeployConfigError(
                f"agentSettings is not a valid JSON object ({exc.msg})"
            ) from exc
    if not isinstance(value, Mapping):
        raise DeployConfigError("agentSettings must be an object of SSM name to value")
    rendered: dict[str, str] = {}
    for name, setting in value.items():
        rendered[name] = _agent_setting(str(name), setting)
    return rendered


def _agent_setting(name: str, value: Any) -> str:
    key = KEYS_BY_SSM.get(name)
    if key is None:
        raise DeployConfigError(
            f"agentSettings has unknown name {name!r}; use SSM names such as "
            "'mhq/webhook_url' or 'gitlab/repositories'"
        )
    if key.secret:
        # Values in the template are readable by anyone who may read the stack, so
        # secrets go to SecureString parameters that the operator writes.
        raise DeployConfigError(
            f"agentSettings {name!r} is a secret; store it with scripts/put-secret "
            "as a SecureString instead of in the template"
        )
    if key.kind is Kind.LIST:
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise DeployConfigError(f"agentSettings {name!r} must be a list of strings")
        # A JSON array keeps URLs that contain commas intact; the agent reads both.
        return _checked_value(name, json.dumps(value))
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DeployConfigError(f"agentSettings {name!r} must be a string or number")
    return _checked_value(name, str(value).strip())


def _checked_value(name: str, text: str) -> str:
    if not text:
        raise DeployConfigError(
            f"agentSettings {name!r} is empty; SSM rejects empty values, so omit it"
        )
    if len(text.encode()) > STANDARD_PARAMETER_MAX_BYTES:
        raise DeployConfigError(
            f"agentSettings {name!r} is longer than the {STANDARD_PARAMETER_MAX_BYTES} "
            "bytes of a standard SSM parameter; shorten it or write it with "
            "scripts/put-secret as an advanced-tier parameter"
        )
    return text
