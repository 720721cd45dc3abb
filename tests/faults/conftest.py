"""Fixtures for the fault suite: fakes with a session-unique token, a database URL
with a password, a clean run to compare against, and the search for secrets.

Every output a fault test produces (agent logs, status output, decrypted messages,
text stored in the database) is collected. When the test ends, the output is
searched for every configured secret, and a hit fails that test.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.postgres import drop_database, fresh_database
from tests.fakes.receiver import Receiver
from tests.faults.support import (
    BITBUCKET_FAULT_TOKEN,
    FAULT_TOKEN,
    SecretSearch,
    Version,
    bookmarks,
    host_of,
    query,
    versions,
)
from tests.integration import agent as agent_module
from tests.integration.agent import AgentSetup, add_bitbucket, make_setup

LAST_TEST = "test_no_secret_in_any_output"
# Prefix of the kill point descriptions of the Bitbucket kill tests.
BITBUCKET_KILL = "bitbucket: "


@dataclass
class FaultCounts:
    """The numbers the suite reports at its end."""

    kill_points: list[str] = field(default_factory=list)
    scenarios: set[str] = field(default_factory=set)
    records_lost: int = 0
    sent_under_two_ids: int = 0


COUNTS = FaultCounts()
SEARCH = SecretSearch()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the closing secret search after every other test."""
    last = [item for item in items if item.name == LAST_TEST]
    items[:] = [item for item in items if item.name != LAST_TEST] + last


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS.scenarios:
        return
    on_bitbucket = [k for k in COUNTS.kill_points if k.startswith(BITBUCKET_KILL)]
    terminalreporter.write_line(
        f"fault suite: {len(COUNTS.scenarios)} scenarios, "
        f"{len(COUNTS.kill_points)} kill points "
        f"({len(on_bitbucket)} during a Bitbucket sync), "
        f"{COUNTS.records_lost} records lost, "
        f"{COUNTS.sent_under_two_ids} versions sent under two ids, "
        f"{len(SEARCH.outputs)} outputs searched, {len(SEARCH.hits())} secrets found"
    )


@pytest.fixture(scope="session")
def secret_search(receiver_keys: ReceiverKeys) -> SecretSearch:
    SEARCH.add_secret(FAULT_TOKEN)
    SEARCH.add_secret(BITBUCKET_FAULT_TOKEN)
    SEARCH.add_secret(receiver_keys.client_secret)
    return SEARCH


@pytest.fixture(autouse=True)
def search_outputs(
    request: pytest.FixtureRequest, secret_search: SecretSearch
) -> Iterator[None]:
    """Collect what the test's agents print and fail the test on any secret in it."""
    secret_search.test = request.node.nodeid
    COUNTS.scenarios.add(request.node.nodeid)
    agent_module.OUTPUT_OBSERVERS.append(secret_search.observe)
    first = len(secret_search.outputs)
    try:
        yield
    finally:
        agent_module.OUTPUT_OBSERVERS.remove(secret_search.observe)
    if request.node.name != LAST_TEST:
        hits = secret_search.hits(secret_search.outputs[first:])
        assert hits == [], f"secrets found in output: {hits}"


@pytest.fixture(scope="session")
def pg_password_url(pg_url: str, secret_search: SecretSearch) -> str:
    """The server URL with a password, which must then never appear in any output.

    The test server trusts local connections, so any password is accepted; a
    server that checks passwords keeps the URL it was given.
    """
    parts = urlsplit(pg_url)
    if parts.password:
        secret_search.add_secret(parts.password)
        return pg_url
    password = "pgpw-" + secrets.token_hex(8)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc))
    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.OperationalError:
        return pg_url
    secret_search.add_secret(password)
    return url


@pytest.fixture
def db_url(pg_password_url: str, secret_search: SecretSearch) -> Iterator[str]:
    """An empty database of its own; what the agent stored in it is searched too."""
    url = fresh_database(pg_password_url)
    yield url
    with contextlib.suppress(psycopg2.Error):
        secret_search.add("database", _database_text(url))
    drop_database(url)


def _database_text(url: str) -> str:
    tables = query(
        url,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    texts = []
    for (table,) in tables:
        rows = query(url, f'SELECT row_to_json(t)::text FROM "{table}" t')  # noqa: S608
        texts += [row[0] for row in rows]
    return "\n".join(texts)


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    """The fake GitLab, accepting only this session's token."""
    with FakeGitLab(token=FAULT_TOKEN) as gitlab:
        yield gitlab


@pytest.fixture
def receiver(
    receiver_keys: ReceiverKeys, secret_search: SecretSearch
) -> Iterator[Receiver]:
    """The reference receiver; every message it decrypted is searched afterwards."""
    keys = receiver_keys
    with Receiver(keys.private_pem, keys.client_secret, keys.client_id) as running:
        yield running
    for message in running.messages():
        kind = f"decrypted {message.type}"
        secret_search.add(kind, json.dumps(message.envelope, ensure_ascii=False))
    for attempt in running.attempts():
        secret_search.add("receiver attempt", repr(attempt))


@pytest.fixture
def agent(
    tmp_path: Path,
    db_url: str,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    """An agent for the fake GitLab's three projects, with this session's token."""
    setup = make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
    setup.config["integrations"]["gitlab"]["access_token"] = FAULT_TOKEN
    return setup


@dataclass(frozen=True)
class CleanRun:
    """What one undisturbed sync delivers and where its bookmarks end."""

    versions: frozenset[Version]
    bookmarks: dict[tuple[str, str], str]


@pytest.fixture(scope="session")
def clean_run(
    tmp_path_factory: pytest.TempPathFactory,
    pg_password_url: str,
    receiver_keys: ReceiverKeys,
) -> Iterator[CleanRun]:
    keys = receiver_keys
    url = fresh_database(pg_password_url)
    try:
        with (
            FakeGitLab(token=FAULT_TOKEN) as gitlab,
            Receiver(keys.private_pem, keys.client_secret, keys.client_id) as mhq,
        ):
            setup = make_setup(tmp_path_factory.mktemp("clean"), url, gitlab, mhq, keys)
            setup.config["integrations"]["gitlab"]["access_token"] = FAULT_TOKEN
            completed = setup.run("sync")
            assert completed.returncode == 0, completed.stderr[-3000:]
            host = host_of(gitlab)
            yield CleanRun(frozenset(versions(mhq, host)), bookmarks(url, host))
    finally:
        drop_database(url)


# -- Bitbucket -----------------------------------------------------------------------


@pytest.fixture
def fake_bitbucket() -> Iterator[FakeBitbucket]:
    """The fake Bitbucket, accepting only this session's Bitbucket token."""
    with FakeBitbucket(token=BITBUCKET_FAULT_TOKEN) as bitbucket:
        yield bitbucket


def _add_bitbucket(setup: AgentSetup, bitbucket: FakeBitbucket) -> None:
    add_bitbucket(setup, bitbucket)
    setup.config["integrations"]["bitbucket"]["access_token"] = BITBUCKET_FAULT_TOKEN


@pytest.fixture
def bitbucket_agent(
    tmp_path: Path,
    db_url: str,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    """An agent for the fake Bitbucket's repository only, with this session's token."""
    setup = make_setup(tmp_path, db_url, fake_gitlab, receiver, receiver_keys)
    del setup.config["integrations"]["gitlab"]
    _add_bitbucket(setup, fake_bitbucket)
    return setup


@pytest.fixture
def mixed_agent(agent: AgentSetup, fake_bitbucket: FakeBitbucket) -> AgentSetup:
    """An agent for the fake GitLab's three projects and the fake Bitbucket's
    repository together."""
    _add_bitbucket(agent, fake_bitbucket)
    return agent


@dataclass(frozen=True)
class MixedCleanRun:
    """One undisturbed sync of GitLab and Bitbucket together, and its Bitbucket part.

    Both fakes' host:port are shown as HOST. A Bitbucket-only agent must deliver
    exactly the Bitbucket part, because the providers share no records.
    """

    mixed: CleanRun
    bitbucket: CleanRun


@pytest.fixture(scope="session")
def mixed_clean_run(
    tmp_path_factory: pytest.TempPathFactory,
    pg_password_url: str,
    receiver_keys: ReceiverKeys,
) -> Iterator[MixedCleanRun]:
    keys = receiver_keys
    url = fresh_database(pg_password_url)
    try:
        with (
            FakeGitLab(token=FAULT_TOKEN) as gitlab,
            FakeBitbucket(token=BITBUCKET_FAULT_TOKEN) as bitbucket,
            Receiver(keys.private_pem, keys.client_secret, keys.client_id) as mhq,
        ):
            directory = tmp_path_factory.mktemp("clean-mixed")
            setup = make_setup(directory, url, gitlab, mhq, keys)
            setup.config["integrations"]["gitlab"]["access_token"] = FAULT_TOKEN
            _add_bitbucket(setup, bitbucket)
            completed = setup.run("sync")
            assert completed.returncode == 0, completed.stderr[-3000:]
            hosts = (host_of(gitlab), host_of(bitbucket))
            received = frozenset(versions(mhq, *hosts))
            on_bitbucket = frozenset(
                v for v in received if json.loads(v[2])["provider"] == "bitbucket"
            )
            assert on_bitbucket
            assert on_bitbucket != received
            yield MixedCleanRun(
                CleanRun(received, bookmarks(url, *hosts)),
                CleanRun(on_bitbucket, bookmarks(url, *hosts, provider="bitbucket")),
            )
    finally:
        drop_database(url)


@pytest.fixture
def clean_mixed_run(mixed_clean_run: MixedCleanRun) -> CleanRun:
    return mixed_clean_run.mixed


@pytest.fixture
def clean_bitbucket_run(mixed_clean_run: MixedCleanRun) -> CleanRun:
    return mixed_clean_run.bitbucket
