"""An agent for the fake GitLab's projects, the fake Bitbucket and the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, add_bitbucket, make_setup


@pytest.fixture
def agent(
    tmp_path: Path,
    db_url: str,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    setup = make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
    add_bitbucket(setup, fake_bitbucket)
    return setup
