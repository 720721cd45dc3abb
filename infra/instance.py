"""Instance: the EC2 host that runs the agent and Postgres containers."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.checks import acknowledge, acknowledge_nag
from infra.network import AgentNetwork

# Amazon Linux 2023 AMI ids that AWS publishes per region and architecture.
_AMI_PARAMETERS = {
    ec2.InstanceArchitecture.X86_64: (
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    ),
    ec2.InstanceArchitecture.ARM_64: (
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    ),
}
ROOT_DEVICE = "/dev/xvda"


class AgentInstance(Construct):
    """A hardened instance: IMDSv2 only, encrypted gp3 root, no key pair or ingress."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        instance_type: ec2.InstanceType,
        root_volume_gb: int,
        network: AgentNetwork,
        role: iam.IRole,
        user_data: ec2.UserData,
    ) -> None:
        super().__init__(scope, construct_id)

        self.instance = ec2.Instance(
            self,
            "Instance",
            instance_type=instance_type,
            machine_image=machine_image(instance_type),
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            security_group=network.security_group,
            associate_public_ip_address=True,
            role=role,
            user_data=user_data,
            # Changed user data applies at the next boot (CloudFormation stops and
            # starts the instance) instead of replacing it and its Postgres data.
            user_data_causes_replacement=False,
            http_endpoint=True,
            http_tokens=ec2.HttpTokens.REQUIRED,
            # Two hops: the agent container reaches metadata through the docker bridge.
            http_put_response_hop_limit=2,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gb,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
            propagate_tags_to_volume_on_creation=True,
        )
        self._accept_resolved_image_id()
        acknowledge_nag(
            self.instance,
            "EC28",
            (
                "Basic 5-minute metrics are enough for an agent whose jobs run hours "
                "apart; its heartbeat to MHQ every 5 minutes is the liveness signal."
            ),
        )
        acknowledge_nag(
            self.instance,
            "EC29",
            (
                "Termination protection would make cdk destroy fail, and destroy must "
                "remove what the stack made. Deploys do not replace the instance: the "
                "AMI is resolved at launch and new user data applies at a reboot."
            ),
        )

    def _accept_resolved_image_id(self) -> None:
        # CDK's built-in template check and cfn-lint (E1152 in both) accept
        # resolve:ssm:<parameter> only in launch templates, but RunInstances, and so
        # an AWS::EC2::Instance, accepts it as an ImageId too.
        reason = (
            "ImageId is resolve:ssm:<AL2023 parameter>, which EC2 resolves at launch; "
            "the rule only knows ami-... ids."
        )
        acknowledge(self.instance, "CloudFormation-Validate::E1152", reason)
        self.instance.instance.add_metadata(
            "cfn-lint",
            {
                "config": {
                    "ignore_checks": ["E1152"],
                    "ignore_reasons": {"E1152": reason},
                }
            },
        )


def machine_image(instance_type: ec2.InstanceType) -> ec2.IMachineImage:
    """Amazon Linux 2023 for the instance type's architecture, resolved at launch.

    The template contains ``resolve:ssm:<parameter>``, which EC2 resolves when it
    launches the instance. A later AMI release leaves the template unchanged, so a
    deploy does not replace the instance; it needs no lookup, account or credentials
    at synth. A replaced instance starts from the newest AMI.
    """
    parameter = _AMI_PARAMETERS[instance_type.architecture]
    return ec2.MachineImage.resolve_ssm_parameter_at_launch(
        parameter, os=ec2.OperatingSystemType.LINUX
    )
