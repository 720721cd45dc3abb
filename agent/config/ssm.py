"""SSM Parameter Store source: every parameter under a path, read with decryption.

Parameter names below the prefix follow the contract (``<prefix>/gitlab/access_token``)
and map onto config.json paths through ``KEYS_BY_SSM``. The source reads the whole
path on every ``load()``, so an edited parameter applies on the next run.
"""

from __future__ import annotations

from typing import Any

from agent.config.keys import KEYS_BY_SSM
from agent.config.sources import Value
from agent.errors import ConfigError

# Error codes that mean the caller lacks a permission, as opposed to a bad request.
_ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "KMSAccessDeniedException",
    }
)


class SsmSource:
    """Parameters under ``prefix``, keyed by config.json path.

    ``client`` is a boto3 SSM client. Without one, the source creates a client on the
    first ``load()``, and boto3 finds region and credentials as usual (environment,
    shared config, instance metadata).
    """

    def __init__(self, prefix: str, client: Any = None) -> None:
        self.prefix = normalise_prefix(prefix)
        self._client = client
        # Names under the prefix that match no key, filled by load() so that the
        # caller can warn about them as it does for unknown config file keys.
        self.unknown_names: list[str] = []

    def load(self) -> dict[str, Value]:
        values: dict[str, Value] = {}
        self.unknown_names = []
        for parameter in self._read_all():
            full_name = parameter["Name"]
            relative = full_name[len(self.prefix) :].lstrip("/")
            key = KEYS_BY_SSM.get(relative)
            if key is None:
                self.unknown_names.append(full_name)
                continue
            # StringList values stay one comma-separated string and JSON arrays stay
            # text: the settings layer splits both, so every source is parsed alike.
            values[key.path] = Value(parameter["Value"], f"SSM parameter {full_name}")
        return values

    def _read_all(self) -> list[dict[str, Any]]:
        """Page through ``GetParametersByPath`` until no ``NextToken`` is returned.

        A page looks like ``{"Parameters": [{"Name": "/mhq-agent/mhq/client_id",
        "Type": "String", "Value": "c-123", ...}], "NextToken": "..."}``.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._get_client()
        request: dict[str, Any] = {
            "Path": self.prefix,
            "Recursive": True,
            "WithDecryption": True,
        }
        parameters: list[dict[str, Any]] = []
        try:
            while True:
                page = client.get_parameters_by_path(**request)
                parameters.extend(page.get("Parameters", []))
                token = page.get("NextToken")
                if not token:
                    return parameters
                request["NextToken"] = token
        except ClientError as exc:
            raise self._error(_describe_client_error(exc)) from exc
        except BotoCoreError as exc:
            raise self._error(_describe_botocore_error(exc)) from exc

    def _get_client(self) -> Any:
        if self._client is None:
            from botocore.exceptions import BotoCoreError

            try:
                self._client = _create_client()
            except BotoCoreError as exc:
                raise self._error(_describe_botocore_error(exc)) from exc
        return self._client

    def _error(self, problem: str) -> ConfigError:
        return ConfigError("--ssm-prefix", f"SSM path {self.prefix}", problem)


def normalise_prefix(prefix: str) -> str:
    """Return ``prefix`` with one leading slash and no trailing slash.

    Raises ConfigError when nothing is left, because the root path would read every
    parameter in the account.
    """
    stripped = prefix.strip().strip("/")
    if not stripped:
        raise ConfigError(
            "--ssm-prefix",
            f"SSM path {prefix!r}",
            "is empty; give a path such as /mhq-agent",
        )
    return "/" + stripped


def _create_client() -> Any:
    import boto3

    return boto3.client("ssm")


def _describe_client_error(exc: Any) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code", "unknown")
    # AWS error messages name the caller and the resource, never a parameter value.
    message = " ".join(str(error.get("Message", "")).split())[:300]
    if code in _ACCESS_CODES or status == 403:
        return (
            f"reading the parameters failed with {code} ({message}); grant the "
            "credentials ssm:GetParametersByPath on this path, and kms:Decrypt through "
            "SSM for SecureString parameters"
        )
    if code == "ValidationException":
        return (
            f"is not a valid parameter path ({message}); use letters, digits, "
            "'.', '-', '_' and '/' such as /mhq-agent"
        )
    return f"reading the parameters failed with {code} ({message})"


def _describe_botocore_error(exc: Exception) -> str:
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    if isinstance(exc, NoRegionError):
        return "no AWS region is configured; set AWS_REGION or AWS_DEFAULT_REGION"
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials were found; attach an instance role or set "
            "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, EndpointConnectionError):
        return (
            f"the SSM endpoint could not be reached ({exc}); check the region and "
            "the network route to SSM"
        )
    return f"reading the parameters failed ({type(exc).__name__}: {exc})"
