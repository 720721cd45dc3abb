"""Fixtures for tests that run the real agent process against the fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, make_setup


@pytest.fixture
def agent(
    tmp_path: Path,
    db_url: str,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    """An agent configured for the fake GitLab's three projects and the receiver."""
    return make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
