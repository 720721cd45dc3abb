"""Secrets: no configured secret appears in any log, status output, heartbeat, error
message or exception trace, and URLs are masked in logs.

Every fault test's output is searched when that test ends (see conftest.py). The
first test here adds the riskiest paths: secrets in URLs, DEBUG logs, failed
requests with their error messages, and a logged exception trace. The last test
runs after every other test and checks the whole collection.
"""

from __future__ import annotations

import json
import secrets

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.faults.conftest import SEARCH
from tests.faults.support import SecretSearch
from tests.integration.agent import AgentSetup, log_events


def test_secrets_masked_on_error_paths(
    agent: AgentSetup,
    fake_gitlab: FakeGitLab,
    receiver: Receiver,
    secret_search: SecretSearch,
) -> None:
    query_token = "qtok-" + secrets.token_hex(10)
    url_password = "urlpw-" + secrets.token_hex(10)
    pseudonym_key = "pseudo-" + secrets.token_hex(10)
    for value in (query_token, url_password, pseudonym_key):
        secret_search.add_secret(value)
    mhq = agent.config["mhq"]
    mhq["webhook_url"] = f"{receiver.url}?token={query_token}"
    mhq["heartbeat_url"] = receiver.heartbeat_url.replace(
        "http://", f"http://mhq:{url_password}@"
    )
    agent.config["privacy"] = {"pseudonym_key": pseudonym_key}
    agent.env["LOG_LEVEL"] = "DEBUG"
    # Malformed data makes the agent log an error for one stream.
    fake_gitlab.add_fault(
        r"/projects/12345680/pipelines$", status=200, body=b"[null]", times=None
    )
    receiver.enqueue(503, headers={"Retry-After": "0"})

    outputs = [
        agent.run("--log-level", "DEBUG", "sync"),
        agent.run("heartbeat"),
        agent.run("check"),
        agent.run("status"),
        agent.run("status", "--json"),
    ]
    receiver.refuse_connections()
    outputs += [agent.run("heartbeat"), agent.run("check")]
    receiver.accept_connections()
    fake_gitlab.set_token("glpat-" + secrets.token_hex(12))
    outputs += [
        agent.run("sync"),
        agent.run("status", "--json"),
        agent.run("heartbeat"),
    ]

    logged = "\n".join(c.stderr for c in outputs)
    urls = [
        e["url"]
        for c in outputs
        for e in log_events(c)
        if e["event"] == "http request" and e.get("provider") == "mhq"
    ]
    status = json.loads(outputs[-2].stdout)
    assert "list items that are not objects skipped" in logged
    assert urls
    assert all("token=***" in url or "mhq:***@" in url for url in urls)
    assert any(
        r["error"] and r["error"]["code"] == "unauthorized"
        for r in status["repositories"]
    )
    assert len(receiver.heartbeats()) == 2


def test_no_secret_in_any_output() -> None:
    """Runs last: every output of the fault suite, searched for every secret."""
    kinds = {output.kind.split(" (")[0] for output in SEARCH.outputs}
    # Exception traces appear only on unexpected errors, which the suite may not
    # provoke; tests/test_logs.py checks that traces are masked.
    assert {
        "log",
        "status output",
        "command output",
        "database",
        "decrypted agent.heartbeat",
        "decrypted sync.batch",
    } <= kinds
    assert len(SEARCH.values) >= 3
    assert SEARCH.hits() == []
