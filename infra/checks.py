"""cdk-nag: the AwsSolutions rule pack, and acknowledgements that carry their reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_checks(app: App) -> None:
    """Run the AwsSolutions pack at synth; an unacknowledged finding fails synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Accept finding ``rule_id`` on ``construct`` and its children, for ``reason``.

    ``rule_id`` is the id that synth prints after "Acknowledge with", which starts
    with the plugin name, e.g. ``CloudFormation-Validate::E1152``.
    """
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_nag(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept AwsSolutions finding ``rule`` (``EC28``, ``IAM5[Resource::*]``)."""
    acknowledge(construct, f"AwsSolutions::AwsSolutions-{rule}", reason)
