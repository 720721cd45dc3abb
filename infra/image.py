"""Agent image: built from the repository's Dockerfile as an asset, or a given URI."""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest]
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?"
    r"/(?P<repository>[a-z0-9._/-]+?)(?::[\w.-]+|@sha256:[0-9a-f]{64})?$"
)


class AgentImage(Construct):
    """Where the instance pulls the agent image from, and the grant to pull it.

    With ``uri`` unset, CDK builds the Dockerfile at ``context_dir`` when it publishes
    the asset during ``cdk deploy``, which needs Docker, and pushes the image to the
    bootstrap ECR repository. ``cdk synth`` only stages the build context. With an ECR
    ``uri`` the role may pull from that repository, and any other registry must allow
    anonymous pulls.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        uri: str | None,
        context_dir: Path,
        platform: ecr_assets.Platform,
    ) -> None:
        super().__init__(scope, construct_id)

        self.asset: ecr_assets.DockerImageAsset | None = None
        if uri is None:
            self.asset = ecr_assets.DockerImageAsset(
                self,
                "Asset",
                directory=str(context_dir),
                platform=platform,
                display_name="MHQ agent image",
            )
            self.uri = self.asset.image_uri
        else:
            self.uri = uri

    def grant_pull(self, role: iam.IRole) -> None:
        """Allow ``role`` to pull from the asset or ECR repository, if there is one."""
        if self.asset is not None:
            self.asset.repository.grant_pull(role)
            return
        match = _ECR_URI.match(self.uri)
        if match is None:
            return
        stack = Stack.of(self)
        repository_arn = stack.format_arn(
            service="ecr",
            account=match["account"],
            region=match["region"],
            resource="repository",
            resource_name=match["repository"],
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[repository_arn],
            )
        )
        # ECR authorises GetAuthorizationToken only on "*": it returns a registry
        # login, not access to a repository.
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
