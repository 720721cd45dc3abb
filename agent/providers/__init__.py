"""Code hosts. Each provider lives in its own package and is registered here."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.config.settings import Settings
from agent.providers.base import Provider
from agent.providers.http import HttpSettings


def http_settings(settings: Settings) -> HttpSettings:
    return HttpSettings(
        max_concurrency=settings.get("http.max_concurrency"),
        timeout_s=float(settings.get("http.timeout_s")),
        retry_budget_s=float(settings.get("http.retry_budget_s")),
    )


def _gitlab(settings: Settings, stop: threading.Event) -> Provider | None:
    if not settings.gitlab.repositories:
        return None
    from agent.providers.gitlab.provider import GitLabProvider

    return GitLabProvider(
        settings.gitlab,
        http_settings(settings),
        initial_days=settings.get("sync.initial_days"),
        stop=stop,
    )


# name -> factory returning the provider, or None when it has nothing configured.
REGISTRY: dict[str, Callable[[Settings, threading.Event], Provider | None]] = {
    "gitlab": _gitlab,
}
