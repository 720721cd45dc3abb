"""``mhq-agent preview`` prints exactly what the next push sends, and sends nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup
from tests.privacy.support import add_hostile_data, canonical, configure


def preview(agent: AgentSetup) -> list[dict[str, Any]]:
    completed = agent.run("preview", "--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line]


def table_counts(db_url: str) -> dict[str, Any]:
    with psycopg2.connect(db_url) as conn, conn.cursor() as cursor:
        counts = {}
        for query in (
            "SELECT count(*) FROM outbox_batches",
            "SELECT count(*) FROM records WHERE queued_hash IS NULL",
            "SELECT count(*) FROM pseudonyms",
            "SELECT count(*) FROM audit_log",
        ):
            cursor.execute(query)
            counts[query] = cursor.fetchone()
    conn.close()
    return counts


@pytest.mark.parametrize("policy", ["default", "pseudonymise-all", "mixed"])
def test_preview_equals_push(
    agent: AgentSetup,
    receiver: Receiver,
    fake_gitlab: FakeGitLab,
    fake_bitbucket: FakeBitbucket,
    db_url: str,
    policy: str,
) -> None:
    add_hostile_data(fake_gitlab, fake_bitbucket)
    configure(agent, policy)
    agent.config["push"]["max_batch_records"] = 40
    assert agent.run("fetch").returncode == 0
    # MHQ refuses the first batch, so the next push starts with pending batches.
    receiver.enqueue(401)
    assert agent.run("push").returncode == 1
    # A change fetched now is not queued yet.
    fake_gitlab.update_merge_request(1, title="Changed after the refused push")
    assert agent.run("fetch").returncode == 0
    before = table_counts(db_url)

    previewed = preview(agent)
    after = table_counts(db_url)
    pushed = agent.run("push")

    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert before == after
    assert any(line["batch_id"] for line in previewed)
    assert any(line["batch_id"] is None for line in previewed)
    received = [(r.entity, r.record) for r in receiver.records()]
    assert canonical(received) == canonical(
        [(line["entity"], line["record"]) for line in previewed]
    )
    batch_ids = {line["batch_id"] for line in previewed if line["batch_id"]}
    assert batch_ids <= {batch.message_id for batch in receiver.batches()}


def test_preview_sends_nothing(agent: AgentSetup, receiver: Receiver) -> None:
    configure(agent, "people")
    assert agent.run("fetch").returncode == 0

    completed = agent.run("preview")

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert receiver.attempts() == []
    assert "not queued yet" in completed.stdout
    assert "privacy.pseudonym_key=pseudonymise" in completed.stdout
    assert agent.run("preview", "--json").stdout.count("\n") > 100


def test_preview_empty_after_push(agent: AgentSetup) -> None:
    assert agent.run("sync").returncode == 0

    assert preview(agent) == []
