"""Code hosts. Each provider lives in its own package and is registered here."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.config.settings import Settings
from agent.providers.base import Provider
from agent.providers.http import HttpSettings


def http_settings(
    settings: Settings,
    requests_per_window: int | None = None,
    rate_window_s: float = 3600.0,
) -> HttpSettings:
    """Return the HTTP settings of one host. A budget of 0 or None is no budget."""
    return HttpSettings(
        max_concurrency=settings.get("http.max_concurrency"),
        timeout_s=float(settings.get("http.timeout_s")),
        retry_budget_s=float(settings.get("http.retry_budget_s")),
        requests_per_window=requests_per_window or None,
        rate_window_s=rate_window_s,
    )


def _gitlab(settings: Settings, stop: threading.Event) -> Provider | None:
    if not settings.gitlab.repositories:
        return None
    from agent.providers.gitlab.provider import GitLabProvider

    return GitLabProvider(
        settings.gitlab,
        http_settings(
            settings, settings.get("integrations.gitlab.requests_per_minute"), 60.0
        ),
        initial_days=settings.get("sync.initial_days"),
        stop=stop,
    )


def _bitbucket(settings: Settings, stop: threading.Event) -> Provider | None:
    bitbucket = settings.bitbucket
    # A workspace name alone, with a token, means every repository in it.
    workspace_only = bool(bitbucket.workspace_name and bitbucket.access_token)
    if not (bitbucket.repositories or workspace_only):
        return None
    from agent.providers.bitbucket.provider import BitbucketProvider

    return BitbucketProvider(
        bitbucket,
        http_settings(settings, bitbucket.requests_per_hour),
        initial_days=settings.get("sync.initial_days"),
        stop=stop,
    )


# name -> factory returning the provider, or None when it has nothing configured.
REGISTRY: dict[str, Callable[[Settings, threading.Event], Provider | None]] = {
    "gitlab": _gitlab,
    "bitbucket": _bitbucket,
}
