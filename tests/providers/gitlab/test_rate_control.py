"""GitLab request pacing measured at the fake GitLab: budget, spacing, configuration."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.config.settings import GitLabSettings, LoadOptions, load_settings
from agent.providers import REGISTRY
from agent.providers.gitlab.provider import GitLabProvider
from agent.providers.http import HostClient, HttpSettings
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.gitlab_data import SNOWFLAKE_SPEND


class EmptyState:
    """The state of a repository that was never fetched."""

    def bookmark(self, stream: str) -> str | None:
        return None

    def versions(self, entity: str, keys: Sequence[str]) -> dict[str, str]:
        return {}

    def children(
        self, entity: str, parent_id: str, key_prefix: str = ""
    ) -> dict[str, dict[str, Any]]:
        return {}


def busiest_window(times: list[float], window_s: float) -> int:
    """Return the most requests that started within any window of window_s."""
    times = sorted(times)
    return max(
        sum(1 for t in times if start <= t < start + window_s) for start in times
    )


def test_merge_request_fetch_stays_within_budget() -> None:
    budget = 20
    with FakeGitLab(approvals="from_notes") as fake:
        provider = GitLabProvider(
            GitLabSettings(
                fake.url, fake.token, None, (fake.project_url(SNOWFLAKE_SPEND),)
            ),
            HttpSettings(
                max_concurrency=4,
                retry_budget_s=30,
                requests_per_window=budget,
                rate_window_s=1.0,
            ),
            initial_days=0,
        )
        try:
            [repository] = list(provider.resolve())
            pages = list(provider.fetch(repository, "merge_requests", EmptyState()))
        finally:
            provider.close()
        times = [entry.time for entry in fake.requests()]

    assert sum(len(page.records) for page in pages) > 0
    # Commits, notes and approvals of every merge request: several windows' worth.
    assert len(times) > 3 * budget
    assert busiest_window(times, 1.0) <= budget
    assert max(times) - min(times) >= 3.0


def test_low_remaining_spreads_requests(fake_gitlab: FakeGitLab) -> None:
    client = HostClient(
        "gitlab",
        fake_gitlab.api_url,
        {"PRIVATE-TOKEN": fake_gitlab.token},
        HttpSettings(max_concurrency=1, retry_budget_s=10),
    )
    reset = time.time() + 1.5
    fake_gitlab.add_fault(
        r"/user$",
        status=200,
        body={"id": 1},
        headers={
            "RateLimit-Limit": "100",
            "RateLimit-Remaining": "3",
            "RateLimit-Reset": str(reset),
        },
    )

    for _ in range(4):
        client.get_json(f"{fake_gitlab.api_url}/user")
    client.session.close()

    times = sorted(entry.time for entry in fake_gitlab.requests(r"/user$"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Three requests left in 1.5 s: about half a second between starts.
    assert len(times) == 4
    assert all(gap >= 0.35 for gap in gaps)
    assert times[-1] < reset + 0.5


def test_healthy_remaining_does_not_slow_down(fake_gitlab: FakeGitLab) -> None:
    client = HostClient(
        "gitlab",
        fake_gitlab.api_url,
        {"PRIVATE-TOKEN": fake_gitlab.token},
        HttpSettings(max_concurrency=1, retry_budget_s=10),
    )
    fake_gitlab.add_fault(
        r"/user$",
        status=200,
        body={"id": 1},
        headers={
            "RateLimit-Limit": "100",
            "RateLimit-Remaining": "60",
            "RateLimit-Reset": str(time.time() + 60),
        },
    )

    started = time.monotonic()
    for _ in range(5):
        client.get_json(f"{fake_gitlab.api_url}/user")
    client.session.close()

    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(None, 600), ("120", 120), ("0", None)],
)
def test_requests_per_minute_setting(
    tmp_path: Path, configured: str | None, expected: int | None
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        '{"integrations": {"gitlab": {"access_token": "glpat-x", '
        '"repositories": ["https://gitlab.example.com/group/project"]}}}'
    )
    environ = {"GITLAB_REQUESTS_PER_MINUTE": configured} if configured else {}
    settings = load_settings(LoadOptions(config_path=str(config), environ=environ))

    provider = REGISTRY["gitlab"](settings, threading.Event())
    assert isinstance(provider, GitLabProvider)
    try:
        assert provider.client.settings.requests_per_window == expected
        assert provider.client.settings.rate_window_s == 60.0
    finally:
        provider.close()
