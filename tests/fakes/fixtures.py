"""Pytest fixtures for the fakes. tests/conftest.py imports all of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys, make_receiver_keys
from tests.fakes.postgres import database_url, drop_database, fresh_database
from tests.fakes.receiver import Receiver

__all__ = [
    "db_url",
    "fake_bitbucket",
    "fake_gitlab",
    "pg_url",
    "receiver",
    "receiver_keys",
]


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the test PostgreSQL server (DATABASE_URL, local, or a throwaway)."""
    return database_url()


@pytest.fixture
def db_url(pg_url: str) -> Iterator[str]:
    """URL of an empty database of its own, dropped after the test."""
    url = fresh_database(pg_url)
    yield url
    drop_database(url)


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    """A running fake GitLab with the recorded fixtures and the default token."""
    with FakeGitLab() as gitlab:
        yield gitlab


@pytest.fixture
def fake_bitbucket() -> Iterator[FakeBitbucket]:
    """A running fake Bitbucket with the recorded fixtures and the default token."""
    with FakeBitbucket() as bitbucket:
        yield bitbucket


@pytest.fixture(scope="session")
def receiver_keys() -> ReceiverKeys:
    """One RSA key pair and client secret for the session, as RSA keygen is slow."""
    return make_receiver_keys()


@pytest.fixture
def receiver(receiver_keys: ReceiverKeys) -> Iterator[Receiver]:
    """A running reference MHQ receiver using receiver_keys."""
    keys = receiver_keys
    with Receiver(keys.private_pem, keys.client_secret, keys.client_id) as running:
        yield running
