"""What MHQ decrypts under each policy: nothing forbidden, nothing hidden."""

from __future__ import annotations

import re

import pytest

from agent.processing.records import FIELDS
from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup
from tests.privacy.support import (
    HOSTILE_TITLE,
    KEY,
    POLICIES,
    SENTINEL_WORDS,
    add_hostile_data,
    configure,
    contains_name,
    email_addresses,
    free_texts,
    records_by_entity,
    sent_strings,
    stored_originals,
)

PSEUDONYM = re.compile(r"^p_[0-9a-f]{24}$")
USER_REFERENCES = {
    "users": ("id",),
    "pull_requests": ("author_id", "merged_by_id", "reviewer_ids"),
    "pull_request_events": ("actor_id",),
    "pull_request_commits": ("author_id",),
}


@pytest.fixture
def synced(
    request: pytest.FixtureRequest,
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
) -> AgentSetup:
    add_hostile_data(fake_gitlab, fake_bitbucket)
    configure(agent, request.param)
    completed = agent.run("sync")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return agent


ALL = pytest.mark.parametrize("synced", list(POLICIES), indirect=True)


@ALL
def test_nothing_forbidden_sent(synced: AgentSetup, receiver: Receiver) -> None:
    texts = sent_strings(receiver)

    assert receiver.records()
    assert email_addresses(texts) == []
    for word in SENTINEL_WORDS:
        assert not [t for t in texts if word in t], word
    assert KEY not in "\n".join(texts)


@ALL
def test_records_keep_contract_fields(synced: AgentSetup, receiver: Receiver) -> None:
    for entity, records in records_by_entity(receiver).items():
        for record in records:
            assert set(record) == {"provider", *FIELDS[entity]}, entity


@ALL
def test_hidden_names_not_sent(
    synced: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    policy = synced.config["privacy"]
    stored = stored_originals(db_url)
    hidden: dict[str, set[str]] = {}
    if "pseudonym_key" in policy:
        hidden["people"] = stored.people
    if policy.get("titles", "send") != "send":
        hidden["titles"] = stored.titles
    if policy.get("branch_names", "send") != "send":
        hidden["branches"] = stored.branches
    if policy.get("repository_names", "send") != "send":
        hidden["repository_names"] = stored.repository_names
    text = "\n".join(free_texts(receiver))

    for kind, names in hidden.items():
        assert names, kind
        leaked = sorted(name for name in names if contains_name(text, name))
        assert leaked == [], kind


@ALL
def test_people_fields_are_pseudonyms(
    synced: AgentSetup, receiver: Receiver, db_url: str
) -> None:
    keyed = "pseudonym_key" in synced.config["privacy"]
    original_ids = stored_originals(db_url).user_ids
    records = records_by_entity(receiver)

    references = [
        value
        for entity, fields in USER_REFERENCES.items()
        for record in records.get(entity, [])
        for field in fields
        for value in (
            record[field] if isinstance(record[field], list) else [record[field]]
        )
        if value is not None
    ]
    assert references
    if keyed:
        assert all(PSEUDONYM.match(value) for value in references)
        assert not set(references) & original_ids
        for user in records["users"]:
            assert PSEUDONYM.match(user["username"] or "p_" + "0" * 24)
            assert PSEUDONYM.match(user["name"] or "p_" + "0" * 24)
    else:
        assert set(references) <= original_ids


@pytest.mark.parametrize("synced", ["default"], indirect=True)
def test_hostile_title_sent_without_email(
    synced: AgentSetup, receiver: Receiver
) -> None:
    titles = [r["title"] for r in records_by_entity(receiver)["pull_requests"]]

    sent = [t for t in titles if t and "<script>" in t]
    expected = HOSTILE_TITLE.replace("jane.doe@example.com", "[redacted]")
    assert sent == [expected, expected]
