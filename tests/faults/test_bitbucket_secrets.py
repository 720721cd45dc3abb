"""The Bitbucket access token appears in no output, even where Bitbucket or a proxy
in front of it sends the token back.

Every output of every fault test is searched for the Bitbucket token when the test
ends (see conftest.py). This test adds the riskiest Bitbucket paths: the token
echoed in error messages, a next-page link carrying it, DEBUG logs, ``check`` and
a revoked token.
"""

from __future__ import annotations

import json
import secrets

from tests.fakes.bitbucket import FakeBitbucket, error_body
from tests.fakes.bitbucket_data import REPOSITORY
from tests.fakes.receiver import Receiver
from tests.faults.support import BITBUCKET_FAULT_TOKEN, SecretSearch
from tests.integration.agent import AgentSetup, log_events


def test_bitbucket_token_masked_on_error_paths(
    mixed_agent: AgentSetup,
    fake_bitbucket: FakeBitbucket,
    receiver: Receiver,
    secret_search: SecretSearch,
) -> None:
    token = BITBUCKET_FAULT_TOKEN
    echoed = error_body(f"denied for Authorization: Bearer {token}")
    # A proxy that copies the request's Authorization header into its errors.
    fake_bitbucket.add_fault(r"/pipelines/$", status=403, body=echoed, times=None)
    fake_bitbucket.add_fault(
        r"/pullrequests/\d+/commits$", status=400, body=echoed, times=1
    )
    # A next-page link that carries the token in its query string.
    deployments = f"{fake_bitbucket.url}/repositories/{REPOSITORY}/deployments/"
    first_page = {
        "values": [],
        "pagelen": 100,
        "next": f"{deployments}?page=1&access_token={token}",
    }
    fake_bitbucket.add_fault(r"/deployments/$", status=200, body=first_page, times=1)

    outputs = [
        mixed_agent.run("--log-level", "DEBUG", "sync"),
        mixed_agent.run("status"),
        mixed_agent.run("status", "--json"),
        mixed_agent.run("heartbeat"),
        mixed_agent.run("check"),
    ]
    fake_bitbucket.clear_faults()
    fake_bitbucket.set_token("bbtok-" + secrets.token_hex(16))
    outputs += [
        mixed_agent.run("sync"),
        mixed_agent.run("status", "--json"),
        mixed_agent.run("heartbeat"),
        mixed_agent.run("check"),
    ]

    urls = [
        e["url"]
        for c in outputs
        for e in log_events(c)
        if e["event"] == "http request" and "access_token=" in e.get("url", "")
    ]
    errors = " ".join(
        r["error"]["message"]
        for r in json.loads(outputs[2].stdout)["repositories"]
        if r["error"]
    )
    revoked = json.loads(outputs[-3].stdout)["repositories"]
    assert token in secret_search.values
    assert outputs[0].returncode == 1
    assert urls
    assert all("access_token=***" in url for url in urls)
    # Both echoed messages are stored and reported, with the token masked.
    assert errors.count("Bearer ***") == 2
    assert "Bearer ***" in outputs[4].stdout
    assert outputs[4].returncode == 1
    assert any(r["error"] and r["error"]["code"] == "unauthorized" for r in revoked)
    assert outputs[-1].returncode == 1
    assert len(receiver.heartbeats()) == 2
    for completed in outputs:
        assert token not in completed.stdout + completed.stderr
