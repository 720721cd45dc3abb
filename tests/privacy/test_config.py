"""Privacy settings that cannot work stop every command with status 2."""

from __future__ import annotations

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        pytest.param("PRIVACY_TITLES", "privacy.titles", id="titles"),
        pytest.param("PRIVACY_BRANCH_NAMES", "privacy.branch_names", id="branches"),
        pytest.param(
            "PRIVACY_REPOSITORY_NAMES", "privacy.repository_names", id="repositories"
        ),
    ],
)
def test_pseudonymise_needs_key(
    agent: AgentSetup,
    receiver: Receiver,
    fake_gitlab: FakeGitLab,
    variable: str,
    key: str,
) -> None:
    agent.env[variable] = "pseudonymise"

    completed = agent.run("sync")

    assert completed.returncode == 2
    assert f"invalid configuration {key} (from environment {variable})" in (
        completed.stderr
    )
    assert "PRIVACY_PSEUDONYM_KEY" in completed.stderr
    assert receiver.attempts() == []
    assert fake_gitlab.requests() == []


def test_short_key_rejected_unshown(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["privacy"] = {"pseudonym_key": "short-key-42"}

    completed = agent.run("preview")

    assert completed.returncode == 2
    assert "privacy.pseudonym_key" in completed.stderr
    assert "short-key-42" not in completed.stderr
    assert receiver.attempts() == []
