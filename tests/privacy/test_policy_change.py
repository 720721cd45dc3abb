"""A changed policy applies to the next batches, also to those already pending."""

from __future__ import annotations

from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup, log_events
from tests.privacy.support import configure


def test_pending_batches_rebuilt(agent: AgentSetup, receiver: Receiver) -> None:
    agent.config["push"]["retry_budget_s"] = 1
    assert agent.run("fetch").returncode == 0
    receiver.refuse_connections()
    assert agent.run("push").returncode == 1
    receiver.accept_connections()
    configure(agent, "redact-all")

    pushed = agent.run("push")

    assert pushed.returncode == 0, pushed.stderr[-3000:]
    events = {e["event"] for e in log_events(pushed)}
    assert any("other privacy settings" in event for event in events)
    pull_requests = [r.record for r in receiver.records("pull_requests")]
    assert pull_requests
    assert all(r["title"] is None for r in pull_requests)
    assert all(r["source_branch"] is None for r in pull_requests)
    assert all(r["web_url"] is None for r in pull_requests)


def test_unchanged_records_not_resent(agent: AgentSetup, receiver: Receiver) -> None:
    assert agent.run("sync").returncode == 0
    sent = len(receiver.records())
    configure(agent, "people")

    assert agent.run("sync").returncode == 0

    assert len(receiver.records()) == sent


def test_rejected_batch_rebuilt_on_retry(agent: AgentSetup, receiver: Receiver) -> None:
    del agent.config["integrations"]["bitbucket"]
    assert agent.run("fetch").returncode == 0
    receiver.enqueue(422)
    assert agent.run("push").returncode == 1
    configure(agent, "redact-all")

    retried = agent.run("push", "--retry-rejected")

    assert retried.returncode == 0, retried.stderr[-3000:]
    [rejected, accepted] = receiver.attempts()
    assert rejected.status == 422
    assert accepted.webhook_id != rejected.webhook_id
    assert all(r.record["title"] is None for r in receiver.records("pull_requests"))
