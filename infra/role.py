"""IAM: the instance role, limited to the stack's parameter path and Session Manager."""

from __future__ import annotations

from aws_cdk import Aws, Stack, Token
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.checks import acknowledge_nag


class AgentRole(Construct):
    """The role the instance and its containers run as.

    It may read the parameters under ``prefix`` (and decrypt them only through SSM),
    and register with Session Manager. The log group and the image repository add
    their own grants to ``role``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str) -> None:
        super().__init__(scope, construct_id)

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="MHQ agent instance: reads its SSM path, writes its log group",
        )
        self._allow_parameter_reads(prefix)
        self._allow_decryption(prefix)
        self._allow_session_manager()

    def _allow_parameter_reads(self, prefix: str) -> None:
        path_arn = _parameter_arn(self, prefix)

        # SSM authorises GetParametersByPath against the requested path itself, and
        # GetParameter(s) against each parameter name below it.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadParameterPath",
                actions=["ssm:GetParametersByPath"],
                resources=[path_arn],
            )
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadParametersBelowPath",
                actions=["ssm:GetParameter", "ssm:GetParameters"],
                resources=[f"{path_arn}/*"],
            )
        )

        stack = Stack.of(self)
        acknowledge_nag(
            self.role,
            f"IAM5[Resource::{_nag_arn(stack, 'ssm', f'parameter{prefix}/*')}]",
            (
                "GetParameter and GetParameters reach only names below the stack's "
                "own parameter prefix, which contains the agent's settings and secrets."
            ),
        )

    def _allow_decryption(self, prefix: str) -> None:
        stack = Stack.of(self)
        key_arn = stack.format_arn(service="kms", resource="key", resource_name="*")

        # SSM encrypts a SecureString with the encryption context PARAMETER_ARN (AWS
        # KMS Developer Guide, "How Parameter Store uses AWS KMS"). The conditions
        # confine decryption to SSM calls for parameters under the prefix, with any
        # key the operator chose.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DecryptParametersThroughSsm",
                actions=["kms:Decrypt"],
                resources=[key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"ssm.{Aws.REGION}.{Aws.URL_SUFFIX}"
                    },
                    "StringLike": {
                        "kms:EncryptionContext:PARAMETER_ARN": (
                            f"{_parameter_arn(self, prefix)}/*"
                        )
                    },
                },
            )
        )

        acknowledge_nag(
            self.role,
            f"IAM5[Resource::{_nag_arn(stack, 'kms', 'key/*')}]",
            (
                "kms:Decrypt is limited by kms:ViaService to SSM and by the "
                "PARAMETER_ARN encryption context to parameters under the stack's "
                "prefix. The key is whichever one the operator encrypted a secret with."
            ),
        )

    def _allow_session_manager(self) -> None:
        # The five actions of the AWS managed policy AWSCloud9SSMInstanceProfile: what
        # Session Manager needs. AmazonSSMManagedInstanceCore would also allow
        # ssm:GetParameter(s) on every parameter in the account.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="SessionManager",
                actions=[
                    "ssm:UpdateInstanceInformation",
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                ],
                resources=["*"],
            )
        )
        acknowledge_nag(
            self.role,
            "IAM5[Resource::*]",
            (
                "The ssmmessages actions have no resource type, and the instance "
                "cannot name itself in its own role, so Session Manager registration "
                "needs '*'. ecr:GetAuthorizationToken also supports only '*'."
            ),
        )


def _parameter_arn(scope: Construct, prefix: str) -> str:
    """ARN of the parameter path ``prefix`` in the scope's stack."""
    return Stack.of(scope).format_arn(
        service="ssm", resource="parameter", resource_name=prefix.lstrip("/")
    )


def _nag_arn(stack: Stack, service: str, resource: str) -> str:
    """Render an ARN of ``stack`` the way cdk-nag prints it in a finding id.

    cdk-nag shows a pseudo parameter as ``<AWS::Region>``, and a stack with a fixed
    account and region has literal values there instead.
    """
    partition = _nag_value(stack.partition, "AWS::Partition")
    region = _nag_value(stack.region, "AWS::Region")
    account = _nag_value(stack.account, "AWS::AccountId")
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


def _nag_value(value: str, pseudo_parameter: str) -> str:
    return f"<{pseudo_parameter}>" if Token.is_unresolved(value) else value
