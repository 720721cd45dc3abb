"""Run the real ``mhq-agent`` process against the fakes, the way an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.keys import ReceiverKeys
from tests.fakes.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
GITLAB_TOKEN = "glpat-test-token"

# Called with the arguments, stdout and stderr of every command ``AgentSetup.run``
# finished; the fault suite registers one to search all output for secrets.
OUTPUT_OBSERVERS: list[Callable[[tuple[str, ...], str, str], None]] = []


@dataclass
class AgentSetup:
    """A config file for one agent, and a way to run commands with it."""

    config_path: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def write(self) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=2))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``mhq-agent ARGS`` to completion with JSON logs captured."""
        self.write()
        completed = subprocess.run(
            self.command(*args),
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        for observer in OUTPUT_OBSERVERS:
            observer(args, completed.stdout, completed.stderr)
        return completed

    def start(self, *args: str) -> subprocess.Popen[str]:
        self.write()
        return subprocess.Popen(
            self.command(*args),
            cwd=ROOT,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "agent",
            "--config",
            str(self.config_path),
            "--log-format",
            "json",
            *args,
        ]

    def environment(self) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MHQ_", "GITLAB_", "BITBUCKET_", "DATABASE_URL"))
        }
        return {**base, **self.env}


def make_setup(
    tmp_path: Path,
    db_url: str,
    gitlab: FakeGitLab,
    receiver: Receiver,
    keys: ReceiverKeys,
    repositories: list[str] | None = None,
) -> AgentSetup:
    repos = repositories or [
        f"{gitlab.url}/gitlab-data/snowflake_spend",
        f"{gitlab.url}/merico-dev",
    ]
    config = {
        "database_url": db_url,
        "mhq": {
            "webhook_url": receiver.url,
            "client_id": keys.client_id,
            "client_secret": keys.client_secret,
            "public_key": keys.public_pem,
        },
        "integrations": {
            "gitlab": {
                "domain_url": gitlab.url,
                "access_token": GITLAB_TOKEN,
                "repositories": repos,
            }
        },
        "sync": {"initial_days": 0},
        "push": {"retry_budget_s": 5},
        "http": {"retry_budget_s": 10},
    }
    return AgentSetup(tmp_path / "config.json", config)


BITBUCKET_TOKEN = "bb-test-token"


def add_bitbucket(setup: AgentSetup, bitbucket: FakeBitbucket) -> None:
    """Configure the fake Bitbucket's repository next to whatever else is set."""
    setup.config["integrations"]["bitbucket"] = {
        "api_url": bitbucket.url,
        "access_token": BITBUCKET_TOKEN,
        "repositories": [f"{bitbucket.web_url}/user-38/user-38php"],
    }


def log_events(completed: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Parse the JSON log lines the agent wrote to stderr."""
    events = []
    for line in completed.stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events
