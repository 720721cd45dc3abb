"""One synthesized app per context, shared by the whole session (jsii starts once)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.support import REPO_ROOT

# Set before aws_cdk is imported, so the jsii runtime inherits them.
os.environ["CDK_DISABLE_CLI_TELEMETRY"] = "true"
# jsii prints a banner for Node releases past their support date; Node 20 is one.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)


@dataclass(frozen=True)
class Synthesized:
    """A synthesized stack: template, validation report and output folder."""

    template: dict[str, Any]
    report: dict[str, Any]
    outdir: Path
    stack_name: str

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack_name}.template.json"

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }

    def only(self, resource_type: str) -> dict[str, Any]:
        found = list(self.resources(resource_type).values())
        assert len(found) == 1, f"expected one {resource_type}, found {len(found)}"
        return found[0]

    def plugin_report(self, name: str) -> dict[str, Any]:
        for report in self.report["pluginReports"]:
            if report["pluginName"] == name:
                return report
        raise AssertionError(f"no {name} report in the validation report")


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Synthesized]:
    """Return ``synth(**context)``, which synthesizes once per distinct context."""
    from aws_cdk import App

    from infra.config import load_deploy_settings
    from infra.stack import build_app

    base_context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    cache: dict[str, Synthesized] = {}

    def run(**context: Any) -> Synthesized:
        key = json.dumps(context, sort_keys=True)
        if key not in cache:
            outdir = tmp_path_factory.mktemp("cdk.out")
            app = App(context={**base_context, **context}, outdir=str(outdir))
            settings = load_deploy_settings(
                app.node.try_get_context, base_dir=REPO_ROOT
            )
            stack = build_app(app, settings, REPO_ROOT)
            assembly = app.synth()
            cache[key] = Synthesized(
                template=assembly.get_stack_by_name(stack.stack_name).template,
                report=_read_report(outdir),
                outdir=outdir,
                stack_name=stack.stack_name,
            )
        return cache[key]

    return run


@pytest.fixture(scope="session")
def default_stack(synth: Callable[..., Synthesized]) -> Synthesized:
    return synth()


def _read_report(outdir: Path) -> dict[str, Any]:
    # CDK writes the report only when a plugin has a finding or an acknowledgement.
    path = outdir / "validation-report.json"
    if not path.exists():
        return {"pluginReports": []}
    return json.loads(path.read_text())
