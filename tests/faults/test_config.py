"""Every setting with an environment variable, given an invalid value there: the
command exits 2 before any network call, naming the key and its source, and never
printing a secret's value."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.keys import KEYS_BY_ENV
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver
from tests.faults.support import FAULT_TOKEN
from tests.integration.agent import OUTPUT_OBSERVERS, ROOT, AgentSetup, make_setup

INVALID = {
    "MHQ_WEBHOOK_URL": "ftp://127.0.0.1/hook",
    "MHQ_HEARTBEAT_URL": "not a url",
    "MHQ_CLIENT_SECRET": "whsec_dG9vc2hvcnQ=",
    "MHQ_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----",
    "DATABASE_URL": "mysql://agent:hunter2env@127.0.0.1/agent",
    "GITLAB_DOMAIN_URL": "127.0.0.1:8080",
    "GITLAB_ACCESS_TOKEN": "glpat-with a-space",
    "GITLAB_CA_BUNDLE": "/nonexistent/mhq-test/ca.pem",
    "GITLAB_REQUESTS_PER_MINUTE": "fast",
    "BITBUCKET_ACCESS_TOKEN": "bb-token-\u00e9t\u00e9",
    "BITBUCKET_API_URL": "https://",
    "BITBUCKET_REQUESTS_PER_HOUR": "lots",
    "FETCH_SCHEDULE": "every 6 hours",
    "PUSH_SCHEDULE": "61 * * * *",
    "HEARTBEAT_SCHEDULE": "*/5 * * *",
    "SCHEDULE_TIMEZONE": "Mars/Olympus_Mons",
    "INITIAL_SYNC_DAYS": "ninety",
    "PRIVACY_TITLES": "hide",
    "PRIVACY_BRANCH_NAMES": "encrypt",
    "PRIVACY_REPOSITORY_NAMES": "pseudonymize",
    "HTTP_MAX_CONCURRENCY": "0",
    "HTTP_TIMEOUT_S": "-5",
    "HTTP_RETRY_BUDGET_S": "2.5",
    "PUSH_MAX_BATCH_RECORDS": "0",
    "PUSH_MAX_BATCH_BYTES": "4MB",
    "PUSH_RETRY_BUDGET_S": "1e3",
    "RETENTION_DELIVERED_DAYS": "a week",
    "RETENTION_JOB_RUNS_DAYS": "-3",
    "LOG_FORMAT": "xml",
    "LOG_LEVEL": "TRACE",
}

# Variables for which every non-blank value is valid (a blank one counts as unset).
ALWAYS_VALID = {
    "MHQ_CLIENT_ID": "any text is a client id",
    "MHQ_AGENT_ID": "any text is an agent id",
    "BITBUCKET_WORKSPACE_NAME": "any text is a workspace slug",
    "PRIVACY_PSEUDONYM_KEY": "any text is an HMAC key",
}

SECRET_VALUES = {"hunter2env", "glpat-with a-space", "bb-token-", "dG9vc2hvcnQ="}


def test_every_variable_has_a_case() -> None:
    assert set(INVALID) | set(ALWAYS_VALID) == set(KEYS_BY_ENV)
    assert set(INVALID).isdisjoint(ALWAYS_VALID)


@pytest.fixture(scope="module")
def servers(receiver_keys: ReceiverKeys) -> Iterator[tuple[FakeGitLab, Receiver]]:
    """One fake GitLab and receiver for the module; no test may reach either."""
    keys = receiver_keys
    with (
        FakeGitLab(token=FAULT_TOKEN) as gitlab,
        Receiver(keys.private_pem, keys.client_secret, keys.client_id) as receiver,
    ):
        yield gitlab, receiver


@pytest.fixture
def quiet_agent(
    tmp_path: Path,
    servers: tuple[FakeGitLab, Receiver],
    receiver_keys: ReceiverKeys,
) -> AgentSetup:
    """An agent whose database is never reached: port 9 on loopback is closed."""
    gitlab, receiver = servers
    gitlab.reset_log()
    receiver.reset()
    unused_database = "postgresql://mhq@127.0.0.1:9/never"
    return make_setup(tmp_path, unused_database, gitlab, receiver, receiver_keys)


@pytest.mark.parametrize("variable", sorted(INVALID))
def test_invalid_variable_exits_2(
    quiet_agent: AgentSetup,
    servers: tuple[FakeGitLab, Receiver],
    variable: str,
) -> None:
    agent = quiet_agent
    fake_gitlab, receiver = servers
    agent.env[variable] = INVALID[variable]
    agent.write()
    # Without --log-format, which would override LOG_FORMAT.
    command = [
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(agent.config_path),
        "sync",
    ]

    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=agent.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for observer in OUTPUT_OBSERVERS:
        observer(("sync",), completed.stdout, completed.stderr)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-2000:]
    assert KEYS_BY_ENV[variable].path in completed.stderr
    assert f"environment {variable}" in completed.stderr
    assert [value for value in SECRET_VALUES if value in output] == []
    assert fake_gitlab.request_count() == 0
    assert receiver.attempts() == []
