"""cfn-lint on the synthesized templates, hadolint on the Dockerfile, build context."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.infra.conftest import Synthesized
from tests.infra.support import REPO_ROOT, tool


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "context",
    [{}, {"instanceType": "t4g.micro", "agentImage": "ghcr.io/example/agent:1"}],
    ids=["defaults", "arm-prebuilt-image"],
)
def test_cfn_lint_clean(synth: Callable[..., Synthesized], context: dict) -> None:
    stack = synth(**context)

    result = run(tool("cfn-lint"), str(stack.template_path))

    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_clean() -> None:
    result = run(tool("hadolint"), str(REPO_ROOT / "Dockerfile"))

    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_runtime_only() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()

    assert "pip install --no-cache-dir . " in text
    assert "[infra]" not in text
    assert "[dev]" not in text
    assert "\nUSER 10001\n" in text
    assert "HEALTHCHECK" in text
    assert "/tmp/mhq-agent.alive" in text
    assert 'CMD ["run"]' in text


def test_build_context_is_small(default_stack: Synthesized) -> None:
    (asset_dir,) = default_stack.outdir.glob("asset.*")

    top_level = {path.name for path in asset_dir.iterdir()}
    files = [path for path in asset_dir.rglob("*") if path.is_file()]

    assert top_level <= {
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "agent",
    }
    assert not [path for path in files if "__pycache__" in path.parts]
    assert sum(path.stat().st_size for path in files) < 5_000_000
