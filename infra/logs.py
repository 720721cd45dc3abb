"""Logging: the CloudWatch Logs group that both containers write to."""

from __future__ import annotations

from typing import cast

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct


class AgentLogs(Construct):
    """One log group for the agent and Postgres containers (streams agent, postgres).

    The group expires events after ``retention_days`` and is deleted with the stack.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, retention_days: int
    ) -> None:
        super().__init__(scope, construct_id)

        self.log_group = logs.LogGroup(
            self, "Group", removal_policy=RemovalPolicy.DESTROY
        )
        # The Python RetentionDays enum contains member names, not day counts, so the
        # validated count goes straight onto the CloudFormation resource.
        cfn_group = cast(logs.CfnLogGroup, self.log_group.node.default_child)
        cfn_group.retention_in_days = retention_days
