"""Parameters: the agent's non-secret settings as SSM String parameters."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_ssm as ssm
from constructs import Construct


class AgentParameters(Construct):
    """One String parameter per setting, named ``<prefix>/<SSM name>``.

    CloudFormation cannot create SecureString parameters, so secrets are absent here:
    the operator writes them under the same prefix with scripts/put-secret. Editing a
    parameter in the console works until the next deploy that changes its value in
    the deploy config, which overwrites it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        settings: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)

        self.parameters: dict[str, ssm.StringParameter] = {}
        for name, value in sorted(settings.items()):
            self.parameters[name] = ssm.StringParameter(
                self,
                _construct_id(name),
                parameter_name=f"{prefix}/{name}",
                string_value=value,
                description="MHQ agent setting from the deploy config",
                tier=ssm.ParameterTier.STANDARD,
            )


def _construct_id(name: str) -> str:
    """Turn ``gitlab/repositories`` into ``GitlabRepositories``."""
    words = name.replace("/", "_").split("_")
    return "".join(word.capitalize() for word in words)
