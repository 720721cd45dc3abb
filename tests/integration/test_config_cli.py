"""Invalid configuration: exit 2 before any network call, naming key and source."""

from __future__ import annotations

import pytest

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import GITLAB_TOKEN, AgentSetup


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        pytest.param("FETCH_SCHEDULE", "every day", "schedule.fetch", id="cron"),
        pytest.param("SCHEDULE_TIMEZONE", "Mars/Olympus", "schedule.timezone", id="tz"),
        pytest.param("INITIAL_SYNC_DAYS", "ninety", "sync.initial_days", id="days"),
        pytest.param(
            "MHQ_WEBHOOK_URL", "http://example.com/hook", "mhq.webhook_url", id="url"
        ),
        pytest.param("MHQ_PUBLIC_KEY", "not a key", "mhq.public_key", id="public-key"),
        pytest.param(
            "MHQ_CLIENT_SECRET",
            "whsec_@@@@-secret-value",
            "mhq.client_secret",
            id="secret",
        ),
        pytest.param("PRIVACY_TITLES", "hide", "privacy.titles", id="choice"),
    ],
)
def test_invalid_value_exits_2(
    agent: AgentSetup,
    receiver: Receiver,
    fake_gitlab: FakeGitLab,
    variable: str,
    value: str,
    key: str,
) -> None:
    agent.env[variable] = value

    completed = agent.run("sync")

    assert completed.returncode == 2
    assert key in completed.stderr
    assert f"environment {variable}" in completed.stderr
    assert fake_gitlab.request_count() == 0
    assert receiver.attempts() == []


def test_secret_value_never_printed(agent: AgentSetup) -> None:
    agent.env["MHQ_CLIENT_SECRET"] = "whsec_@@@@-secret-value"
    agent.env["GITLAB_ACCESS_TOKEN"] = "  "

    completed = agent.run("sync")

    assert completed.returncode == 2
    assert "@@@@-secret-value" not in completed.stderr + completed.stdout


def test_missing_token_names_how_to_set(agent: AgentSetup) -> None:
    del agent.config["integrations"]["gitlab"]["access_token"]

    completed = agent.run("fetch")

    assert completed.returncode == 2
    assert "integrations.gitlab.access_token" in completed.stderr
    assert "GITLAB_ACCESS_TOKEN" in completed.stderr


def test_environment_overrides_file(agent: AgentSetup, fake_gitlab: FakeGitLab) -> None:
    agent.config["integrations"]["gitlab"]["access_token"] = "glpat-wrong"
    agent.env["GITLAB_ACCESS_TOKEN"] = GITLAB_TOKEN

    completed = agent.run("fetch")

    assert completed.returncode == 0, completed.stderr[-2000:]


def test_earlier_agent_layout_and_env_names(
    agent: AgentSetup, receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    mhq = agent.config.pop("mhq")
    database_url = agent.config.pop("database_url")
    gitlab = agent.config["integrations"]["gitlab"]
    agent.env.update(
        {
            "MHQ_WEBHOOK_URL": mhq["webhook_url"],
            "MHQ_CLIENT_ID": mhq["client_id"],
            "MHQ_CLIENT_SECRET": mhq["client_secret"],
            "MHQ_PUBLIC_KEY": mhq["public_key"],
            "GITLAB_DOMAIN_URL": gitlab.pop("domain_url"),
            "GITLAB_ACCESS_TOKEN": gitlab.pop("access_token"),
            "INITIAL_SYNC_DAYS": "0",
        }
    )
    agent.env["DATABASE_URL"] = database_url
    agent.config = {
        "integrations": {"gitlab": {"repositories": gitlab["repositories"]}}
    }

    completed = agent.run("sync")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(receiver.records("pull_requests")) == 24
