#!/usr/bin/env python3
"""CDK entry point, run by ``npx cdk synth`` with the context of cdk.json and ``-c``."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import App

from infra.config import load_deploy_settings
from infra.stack import build_app

REPO_ROOT = Path(__file__).resolve().parent


def main() -> None:
    app = App()
    settings = load_deploy_settings(app.node.try_get_context, base_dir=REPO_ROOT)
    build_app(app, settings, REPO_ROOT)
    app.synth()


if __name__ == "__main__":
    main()
