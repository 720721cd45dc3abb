"""Network: a VPC with public subnets only, and a security group with no ingress."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from infra.checks import acknowledge_nag


class AgentNetwork(Construct):
    """The VPC the instance runs in and its security group.

    With ``vpc_id`` the stack looks up an existing VPC (which needs an account and
    region at synth, and caches the result in cdk.context.json). Without it, the stack
    makes a VPC with one public subnet per zone and no NAT gateway: the instance gets a
    public IPv4 address for its outbound calls and accepts no inbound connection.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_id: str | None,
        egress_ports: tuple[int, ...],
    ) -> None:
        super().__init__(scope, construct_id)

        self.vpc = self._existing_vpc(vpc_id) if vpc_id else self._new_vpc()
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=self.vpc,
            description="MHQ agent host: no inbound rules, limited outbound TCP",
            allow_all_outbound=False,
        )
        # Every outbound call (code hosts, MHQ, SSM, CloudWatch Logs, ECR, dnf) is
        # HTTPS. DNS, NTP and instance metadata go to link-local or VPC resolver
        # addresses, which security groups do not filter.
        for port in egress_ports:
            self.security_group.add_egress_rule(
                ec2.Peer.any_ipv4(), ec2.Port.tcp(port), f"outbound TCP {port}"
            )

    def _existing_vpc(self, vpc_id: str) -> ec2.IVpc:
        return ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)

    def _new_vpc(self) -> ec2.IVpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.80.0.0/24"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26
                )
            ],
            # Restricting the default security group adds a Lambda-backed custom
            # resource; nothing in this VPC uses that group, so it is left as AWS
            # makes it.
            restrict_default_security_group=False,
        )
        acknowledge_nag(
            vpc,
            "VPC7",
            (
                "The VPC contains one instance whose security group has no inbound "
                "rule and allows outbound TCP only to the configured ports (443 by "
                "default). Flow logs are left off to keep the stack to what the "
                "agent needs; add them if your policy requires."
            ),
        )
        return vpc
