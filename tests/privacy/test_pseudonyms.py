"""Pseudonyms: the same across processes and databases, different under another key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.postgres import drop_database, fresh_database
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, add_bitbucket, make_setup
from tests.privacy.support import OTHER_KEY, configure


@pytest.fixture
def second_db(pg_url: str) -> Iterator[str]:
    url = fresh_database(pg_url)
    yield url
    drop_database(url)


def sent_users(receiver: Receiver) -> set[tuple[str, str, str, str]]:
    return {
        (r.provider, r.record["id"], r.record["username"], r.record["name"])
        for r in receiver.records("users")
    }


def test_same_key_same_pseudonyms_elsewhere(
    agent: AgentSetup,
    tmp_path: Path,
    second_db: str,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> None:
    configure(agent, "pseudonymise-all")
    assert agent.run("sync").returncode == 0
    first = sent_users(receiver)
    first_repositories = {r.record["key"] for r in receiver.records("repositories")}
    receiver.reset()
    (tmp_path / "other").mkdir()
    other = make_setup(
        tmp_path / "other", second_db, fake_gitlab, receiver, receiver_keys
    )
    add_bitbucket(other, fake_bitbucket)
    configure(other, "pseudonymise-all")

    assert other.run("sync").returncode == 0

    assert first
    assert sent_users(receiver) == first
    assert {r.record["key"] for r in receiver.records("repositories")} == (
        first_repositories
    )


def test_other_key_other_pseudonyms(
    agent: AgentSetup,
    tmp_path: Path,
    second_db: str,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
) -> None:
    configure(agent, "people")
    assert agent.run("sync").returncode == 0
    first = sent_users(receiver)
    receiver.reset()
    (tmp_path / "other").mkdir()
    other = make_setup(
        tmp_path / "other", second_db, fake_gitlab, receiver, receiver_keys
    )
    add_bitbucket(other, fake_bitbucket)
    other.config["privacy"] = {"pseudonym_key": OTHER_KEY}

    assert other.run("sync").returncode == 0

    second = sent_users(receiver)
    assert len(second) == len(first)
    for field in (1, 2, 3):
        before = {user[field] for user in first} - {None}
        after = {user[field] for user in second} - {None}
        assert before, field
        assert not before & after, field


def test_changed_record_keeps_pseudonyms(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    configure(agent, "mixed")
    assert agent.run("sync").returncode == 0
    before = {
        r.record["id"]: r.record
        for r in receiver.records("pull_requests", provider="gitlab")
    }
    fake_gitlab.update_merge_request(1, title="A new title for the second run")
    receiver.reset()

    assert agent.run("sync").returncode == 0

    [after] = [r.record for r in receiver.records("pull_requests")]
    earlier = before[after["id"]]
    assert after["updated_at"] != earlier["updated_at"]
    assert after["author_id"] == earlier["author_id"]
    assert after["source_branch"] == earlier["source_branch"]
    assert after["reviewer_ids"] == earlier["reviewer_ids"]
