"""Template assertions for the agent stack, synthesized offline with no credentials."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.conftest import Synthesized

PREFIX = "/mhq-agent"
AL2023_X86 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
AL2023_ARM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
ECR_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/mhq-agent:1.4.0"


def statements(stack: Synthesized) -> list[dict[str, Any]]:
    policies = stack.resources("AWS::IAM::Policy").values()
    return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


def statement(stack: Synthesized, sid: str) -> dict[str, Any]:
    found = [s for s in statements(stack) if s.get("Sid") == sid]
    assert len(found) == 1, f"expected one statement {sid}, found {len(found)}"
    return found[0]


def joined(value: Any) -> str:
    """Flatten an Fn::Join of strings and Refs into readable text for comparisons."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(joined(part) for part in parts)
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected intrinsic {value}")


def parameter_arn(suffix: str = "") -> str:
    return (
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
        f"parameter{PREFIX}{suffix}"
    )


def user_data(stack: Synthesized) -> str:
    instance = stack.only("AWS::EC2::Instance")
    return joined(instance["Properties"]["UserData"]["Fn::Base64"])


# Network


def test_security_group_has_no_ingress(default_stack: Synthesized) -> None:
    group = default_stack.only("AWS::EC2::SecurityGroup")["Properties"]

    assert "SecurityGroupIngress" not in group
    assert default_stack.resources("AWS::EC2::SecurityGroupIngress") == {}


def test_egress_is_https_only(default_stack: Synthesized) -> None:
    group = default_stack.only("AWS::EC2::SecurityGroup")["Properties"]

    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "outbound TCP 443",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_egress_ports_from_context(synth: Callable[..., Synthesized]) -> None:
    stack = synth(egressPorts="443,8443")

    rules = stack.only("AWS::EC2::SecurityGroup")["Properties"]["SecurityGroupEgress"]

    assert [rule["FromPort"] for rule in rules] == [443, 8443]


def test_new_vpc_is_public_without_nat(default_stack: Synthesized) -> None:
    subnets = default_stack.resources("AWS::EC2::Subnet").values()

    assert len(default_stack.resources("AWS::EC2::VPC")) == 1
    assert default_stack.resources("AWS::EC2::NatGateway") == {}
    assert default_stack.resources("AWS::EC2::EIP") == {}
    assert subnets
    assert all(s["Properties"]["MapPublicIpOnLaunch"] for s in subnets)


def test_existing_vpc_is_not_created(synth: Callable[..., Synthesized]) -> None:
    # Without cached lookup results CDK uses its placeholder VPC, which is enough to
    # show that the stack creates no VPC of its own.
    stack = synth(
        vpcId="vpc-0abc1234def567890", account="123456789012", region="eu-west-1"
    )

    assert stack.resources("AWS::EC2::VPC") == {}
    assert stack.resources("AWS::EC2::Subnet") == {}
    assert len(stack.resources("AWS::EC2::Instance")) == 1


# Instance


def test_imdsv2_required_with_hop_limit(default_stack: Synthesized) -> None:
    Template.from_json(default_stack.template).has_resource_properties(
        "AWS::EC2::Instance",
        {
            "MetadataOptions": {
                "HttpEndpoint": "enabled",
                "HttpTokens": "required",
                "HttpPutResponseHopLimit": 2,
            }
        },
    )


def test_root_volume_is_encrypted_gp3(default_stack: Synthesized) -> None:
    properties = default_stack.only("AWS::EC2::Instance")["Properties"]

    assert properties["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "DeleteOnTermination": True,
                "Encrypted": True,
                "VolumeSize": 8,
                "VolumeType": "gp3",
            },
        }
    ]


def test_no_key_pair(default_stack: Synthesized) -> None:
    properties = default_stack.only("AWS::EC2::Instance")["Properties"]

    assert "KeyName" not in properties
    assert default_stack.resources("AWS::EC2::KeyPair") == {}


def test_default_instance_type(default_stack: Synthesized) -> None:
    properties = default_stack.only("AWS::EC2::Instance")["Properties"]

    assert properties["InstanceType"] == "t2.micro"


def test_instance_settings_from_context(synth: Callable[..., Synthesized]) -> None:
    stack = synth(instanceType="t3.small", rootVolumeGb="12")

    properties = stack.only("AWS::EC2::Instance")["Properties"]

    assert properties["InstanceType"] == "t3.small"
    assert properties["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 12


def test_ami_resolved_at_launch(default_stack: Synthesized) -> None:
    properties = default_stack.only("AWS::EC2::Instance")["Properties"]

    assert properties["ImageId"] == f"resolve:ssm:{AL2023_X86}"
    # No CloudFormation parameter: a new AMI release leaves the template unchanged.
    assert set(default_stack.template.get("Parameters", {})) == {"BootstrapVersion"}


def test_graviton_uses_arm_ami_and_image(synth: Callable[..., Synthesized]) -> None:
    stack = synth(instanceType="t4g.micro")

    properties = stack.only("AWS::EC2::Instance")["Properties"]
    assets = json.loads((stack.outdir / f"{stack.stack_name}.assets.json").read_text())
    platforms = [
        image["source"]["platform"] for image in assets["dockerImages"].values()
    ]

    assert properties["ImageId"] == f"resolve:ssm:{AL2023_ARM}"
    assert platforms == ["linux/arm64"]


def test_user_data_runs_every_boot(default_stack: Synthesized) -> None:
    text = user_data(default_stack)

    assert "Content-Type: text/cloud-config" in text
    assert "cloud_final_modules:\n  - [scripts-user, always]" in text
    assert "export MHQ_REGION='${AWS::Region}'" in text
    assert f"export MHQ_PARAMETER_PREFIX='{PREFIX}'" in text
    assert "export MHQ_POSTGRES_IMAGE='public.ecr.aws/docker/library/postgres:" in text
    assert "cdk-hnb659fds-container-assets-" in text


def test_user_data_fits_ec2_limit(default_stack: Synthesized) -> None:
    # EC2 accepts at most 16 KiB of user data before base64. The tokens resolve to
    # strings of at most about 200 bytes each (image URI, log group name, region).
    text = user_data(default_stack)

    assert len(text.encode()) + 4 * 200 < 16 * 1024


def test_user_data_change_keeps_instance(
    default_stack: Synthesized, synth: Callable[..., Synthesized]
) -> None:
    # With user_data_causes_replacement, CDK renames the instance when its user data
    # changes, which replaces it and its Postgres data. Here the logical id stays.
    changed = synth(
        postgresImage="public.ecr.aws/docker/library/postgres:16.11-bookworm"
    )

    assert user_data(changed) != user_data(default_stack)
    assert set(changed.resources("AWS::EC2::Instance")) == set(
        default_stack.resources("AWS::EC2::Instance")
    )


# IAM


def test_role_has_no_managed_policies(default_stack: Synthesized) -> None:
    role = default_stack.only("AWS::IAM::Role")["Properties"]

    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
        }
    ]


def test_path_read_is_scoped(default_stack: Synthesized) -> None:
    by_path = statement(default_stack, "ReadParameterPath")
    below = statement(default_stack, "ReadParametersBelowPath")

    assert by_path["Action"] == "ssm:GetParametersByPath"
    assert joined(by_path["Resource"]) == parameter_arn()
    assert below["Action"] == ["ssm:GetParameter", "ssm:GetParameters"]
    assert joined(below["Resource"]) == parameter_arn("/*")


def test_decrypt_only_through_ssm(default_stack: Synthesized) -> None:
    decrypt = statement(default_stack, "DecryptParametersThroughSsm")
    conditions = decrypt["Condition"]

    assert decrypt["Action"] == "kms:Decrypt"
    assert joined(conditions["StringEquals"]["kms:ViaService"]) == (
        "ssm.${AWS::Region}.${AWS::URLSuffix}"
    )
    assert joined(
        conditions["StringLike"]["kms:EncryptionContext:PARAMETER_ARN"]
    ) == parameter_arn("/*")


def test_wildcard_resource_only_where_required(default_stack: Synthesized) -> None:
    unscoped = set()
    for item in statements(default_stack):
        if item["Resource"] == "*":
            actions = item["Action"]
            unscoped.update([actions] if isinstance(actions, str) else actions)

    assert unscoped == {
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ecr:GetAuthorizationToken",
    }


def test_no_action_wildcards(default_stack: Synthesized) -> None:
    for item in statements(default_stack):
        actions = item["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, f"wildcard action {action}"


def test_logs_written_to_own_group(default_stack: Synthesized) -> None:
    (log_group_id,) = default_stack.resources("AWS::Logs::LogGroup")
    writes = [
        s for s in statements(default_stack) if "logs:PutLogEvents" in s["Action"]
    ]

    assert len(writes) == 1
    assert writes[0]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert writes[0]["Resource"] == {"Fn::GetAtt": [log_group_id, "Arn"]}


def test_pulls_only_asset_repository(default_stack: Synthesized) -> None:
    pulls = [s for s in statements(default_stack) if "ecr:BatchGetImage" in s["Action"]]

    assert len(pulls) == 1
    assert joined(pulls[0]["Resource"]).endswith(
        ":repository/cdk-hnb659fds-container-assets-${AWS::AccountId}-${AWS::Region}"
    )


def test_prebuilt_ecr_image(synth: Callable[..., Synthesized]) -> None:
    stack = synth(agentImage=ECR_URI)

    pulls = [s for s in statements(stack) if "ecr:BatchGetImage" in s["Action"]]
    assets = json.loads((stack.outdir / f"{stack.stack_name}.assets.json").read_text())

    assert len(pulls) == 1
    assert joined(pulls[0]["Resource"]) == (
        "arn:${AWS::Partition}:ecr:eu-west-1:123456789012:repository/team/mhq-agent"
    )
    assert assets.get("dockerImages", {}) == {}
    assert f"export MHQ_AGENT_IMAGE='{ECR_URI}'" in user_data(stack)


def test_public_image_needs_no_ecr_grant(synth: Callable[..., Synthesized]) -> None:
    stack = synth(agentImage="ghcr.io/example/mhq-agent:1.4.0")

    actions = {a for s in statements(stack) for a in _actions(s)}

    assert not any(action.startswith("ecr:") for action in actions)


def _actions(item: dict[str, Any]) -> list[str]:
    actions = item["Action"]
    return [actions] if isinstance(actions, str) else actions


# Logging


def test_log_group_retention_and_removal(default_stack: Synthesized) -> None:
    group = default_stack.only("AWS::Logs::LogGroup")

    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Delete"
    assert group["UpdateReplacePolicy"] == "Delete"


def test_log_retention_from_context(synth: Callable[..., Synthesized]) -> None:
    stack = synth(logRetentionDays=90)

    group = stack.only("AWS::Logs::LogGroup")

    assert group["Properties"]["RetentionInDays"] == 90


# Parameters and outputs


def test_no_parameters_without_settings(default_stack: Synthesized) -> None:
    assert default_stack.resources("AWS::SSM::Parameter") == {}


def test_agent_settings_become_strings(synth: Callable[..., Synthesized]) -> None:
    stack = synth(
        parameterPrefix="/team/mhq",
        agentSettings={
            "mhq/webhook_url": "https://mhq.example.com/hooks/agent",
            "gitlab/repositories": ["https://gitlab.example.com/a/b"],
            "schedule/fetch": "15 */4 * * *",
        },
    )

    parameters = {
        p["Properties"]["Name"]: p["Properties"]
        for p in stack.resources("AWS::SSM::Parameter").values()
    }

    assert set(parameters) == {
        "/team/mhq/mhq/webhook_url",
        "/team/mhq/gitlab/repositories",
        "/team/mhq/schedule/fetch",
    }
    assert all(p["Type"] == "String" for p in parameters.values())
    assert parameters["/team/mhq/gitlab/repositories"]["Value"] == (
        '["https://gitlab.example.com/a/b"]'
    )
    assert joined(statement(stack, "ReadParameterPath")["Resource"]).endswith(
        ":parameter/team/mhq"
    )


def test_outputs(default_stack: Synthesized) -> None:
    template = Template.from_json(default_stack.template)
    (instance_id,) = default_stack.resources("AWS::EC2::Instance")
    (log_group_id,) = default_stack.resources("AWS::Logs::LogGroup")

    template.has_output("InstanceId", {"Value": {"Ref": instance_id}})
    template.has_output("ParameterPrefix", {"Value": PREFIX})
    template.has_output("LogGroupName", {"Value": {"Ref": log_group_id}})
    template.has_output(
        "SessionCommand",
        {"Value": Match.object_like({"Fn::Join": Match.any_value()})},
    )
    command = joined(default_stack.template["Outputs"]["SessionCommand"]["Value"])
    assert command == (
        f"aws ssm start-session --target ${{{instance_id}}} --region ${{AWS::Region}}"
    )


# cdk-nag and the CloudFormation checks

EXPECTED_ACKNOWLEDGEMENTS = {
    "AwsSolutions::AwsSolutions-VPC7",
    "AwsSolutions::AwsSolutions-EC28",
    "AwsSolutions::AwsSolutions-EC29",
    "AwsSolutions::AwsSolutions-IAM5[Resource::*]",
    "AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:"
    "<AWS::Region>:<AWS::AccountId>:parameter/mhq-agent/*]",
    "AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:kms:"
    "<AWS::Region>:<AWS::AccountId>:key/*]",
}


def test_nag_has_no_open_findings(default_stack: Synthesized) -> None:
    report = default_stack.plugin_report("AwsSolutions")

    assert report["violations"] == []
    assert report["conclusion"] == "success"


def test_nag_acknowledgements_are_known(default_stack: Synthesized) -> None:
    report = default_stack.plugin_report("AwsSolutions")

    acknowledged = {item["acknowledgedId"] for item in report["suppressedViolations"]}

    assert acknowledged == EXPECTED_ACKNOWLEDGEMENTS


@pytest.mark.parametrize("plugin", ["AwsSolutions", "CloudFormation Validate"])
def test_each_acknowledgement_has_reason(
    default_stack: Synthesized, plugin: str
) -> None:
    report = default_stack.plugin_report(plugin)

    for item in report["suppressedViolations"]:
        assert len(item["reason"].split()) >= 8, (
            f"thin reason for {item['acknowledgedId']}"
        )


def test_nag_clean_for_variants(synth: Callable[..., Synthesized]) -> None:
    variants = [
        synth(agentImage=ECR_URI),
        synth(instanceType="t4g.micro"),
        synth(
            vpcId="vpc-0abc1234def567890", account="123456789012", region="eu-west-1"
        ),
    ]

    for stack in variants:
        assert stack.plugin_report("AwsSolutions")["violations"] == []
