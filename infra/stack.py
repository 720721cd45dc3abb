"""The agent stack: composes the network, logging, parameters, image and instance."""

from __future__ import annotations

import os
from pathlib import Path

from aws_cdk import App, Aws, CfnOutput, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from infra.checks import add_checks
from infra.config import DeploySettings
from infra.image import AgentImage
from infra.instance import AgentInstance
from infra.logs import AgentLogs
from infra.network import AgentNetwork
from infra.parameters import AgentParameters
from infra.role import AgentRole
from infra.user_data import build_user_data


class AgentStack(Stack):
    """A hardened EC2 host that runs the agent and its Postgres as containers."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        repo_root: Path,
        env: Environment | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=env,
            description="MHQ self-hosted sync agent on one EC2 instance",
        )
        instance_type = ec2.InstanceType(settings.instance_type)

        network = AgentNetwork(
            self, "Network", vpc_id=settings.vpc_id, egress_ports=settings.egress_ports
        )
        logs = AgentLogs(self, "Logs", retention_days=settings.log_retention_days)
        AgentParameters(
            self,
            "Parameters",
            prefix=settings.parameter_prefix,
            settings=settings.agent_settings,
        )
        image = AgentImage(
            self,
            "AgentImage",
            uri=None if settings.builds_agent_image else settings.agent_image,
            context_dir=repo_root,
            platform=_image_platform(instance_type),
        )
        role = AgentRole(self, "Permissions", prefix=settings.parameter_prefix)
        logs.log_group.grant_write(role.role)
        image.grant_pull(role.role)

        user_data = build_user_data(
            {
                "MHQ_REGION": Aws.REGION,
                "MHQ_LOG_GROUP": logs.log_group.log_group_name,
                "MHQ_AGENT_IMAGE": image.uri,
                "MHQ_POSTGRES_IMAGE": settings.postgres_image,
                "MHQ_PARAMETER_PREFIX": settings.parameter_prefix,
                "MHQ_SWAP_MB": str(settings.swap_mb),
            }
        )
        host = AgentInstance(
            self,
            "Host",
            instance_type=instance_type,
            root_volume_gb=settings.root_volume_gb,
            network=network,
            role=role.role,
            user_data=user_data,
        )
        self._add_outputs(host, logs, settings)

    def _add_outputs(
        self, host: AgentInstance, logs: AgentLogs, settings: DeploySettings
    ) -> None:
        instance_id = host.instance.instance_id
        CfnOutput(self, "InstanceId", value=instance_id)
        CfnOutput(
            self,
            "SessionCommand",
            description="Opens a shell on the instance through Session Manager",
            value=f"aws ssm start-session --target {instance_id} --region {Aws.REGION}",
        )
        CfnOutput(self, "ParameterPrefix", value=settings.parameter_prefix)
        CfnOutput(self, "LogGroupName", value=logs.log_group.log_group_name)


def build_app(app: App, settings: DeploySettings, repo_root: Path) -> AgentStack:
    """Add the agent stack and the cdk-nag AwsSolutions checks to ``app``."""
    env = None
    if settings.vpc_id:
        # Looking up an existing VPC needs a concrete account and region. The CDK CLI
        # sets CDK_DEFAULT_ACCOUNT and CDK_DEFAULT_REGION from the caller's credentials.
        env = Environment(
            account=app.node.try_get_context("account") or _default("ACCOUNT"),
            region=app.node.try_get_context("region") or _default("REGION"),
        )
    stack = AgentStack(
        app, settings.stack_name, settings=settings, repo_root=repo_root, env=env
    )
    add_checks(app)
    return stack


def _default(name: str) -> str | None:
    return os.environ.get(f"CDK_DEFAULT_{name}")


def _image_platform(instance_type: ec2.InstanceType) -> ecr_assets.Platform:
    if instance_type.architecture is ec2.InstanceArchitecture.ARM_64:
        return ecr_assets.Platform.LINUX_ARM64
    return ecr_assets.Platform.LINUX_AMD64
