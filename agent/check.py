"""``mhq-agent check``: the configuration, the database, each code host and MHQ.

Nothing is stored and no message is sent. The database is only connected to, and
no migration runs. Code hosts get read-only GET requests. MHQ gets one HTTP ``HEAD``
request per URL, which carries no body and is a safe method in HTTP, so it cannot
store anything at MHQ. Any HTTP response to it shows that DNS, the route, TLS and
the web server work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests

from agent import __version__
from agent.config.settings import Settings
from agent.errors import AgentError, ConfigError, ProviderError
from agent.jobs import require_settings
from agent.logs import mask
from agent.providers import REGISTRY
from agent.providers.base import CheckResult
from agent.push.crypto import load_public_key
from agent.store.db import Database

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# Statuses that mean MHQ's web server runs but cannot serve requests now.
UNAVAILABLE = frozenset({502, 503, 504})


def run_checks(settings: Settings) -> tuple[list[CheckResult], int]:
    """Run every check and return the results with the exit status they call for.

    When a required setting is missing, only the configuration is reported and
    the status is 2, so no network call is made with an incomplete configuration.
    """
    config = check_configuration(settings)
    if not all(result.ok for result in config):
        return config, EXIT_CONFIG
    results = [
        *config,
        check_public_key(settings),
        check_database(settings),
        *check_providers(settings),
        *check_mhq(settings),
    ]
    status = EXIT_OK if all(result.ok for result in results) else EXIT_FAILED
    return results, status


def render(results: list[CheckResult]) -> str:
    """Format one line per check: ``ok`` or ``FAILED``, its name and the detail."""
    lines = [
        f"{'ok' if result.ok else 'FAILED':<6}  {result.name}: {mask(result.detail)}"
        for result in results
    ]
    failed = sum(not result.ok for result in results)
    lines.append(
        f"{len(results)} checks, {failed} failed"
        if failed
        else f"{len(results)} checks, all ok"
    )
    return "\n".join(lines)


def check_configuration(settings: Settings) -> list[CheckResult]:
    """Report each job's first missing setting. Values were validated on loading."""
    results = []
    needs: list[tuple[str, Callable[[], None]]] = [
        ("database", lambda: settings.require("database_url")),
        ("fetch", lambda: require_settings("fetch", settings)),
        ("push and heartbeat", lambda: require_settings("push", settings)),
    ]
    for what, require in needs:
        try:
            require()
        except ConfigError as exc:
            results.append(CheckResult(f"configuration for {what}", False, str(exc)))
        else:
            results.append(CheckResult(f"configuration for {what}", True, "complete"))
    return results


def check_public_key(settings: Settings) -> CheckResult:
    """Parse MHQ's public key again, to show its size and key id."""
    try:
        key = load_public_key(settings.get("mhq.public_key"))
    except ValueError as exc:
        return CheckResult("mhq public key", False, str(exc))
    bits = key.get_op_key("encrypt").key_size
    return CheckResult(
        "mhq public key", True, f"RSA {bits} bits, key id {key.thumbprint()}"
    )


def check_database(settings: Settings) -> CheckResult:
    """Connect and read the migration state, without migrating."""
    db = Database(
        settings.get("database_url"),
        reconnect_budget_s=5,
        application_name="mhq-agent-check",
    )
    try:
        rows = db.fetch_all(
            "SELECT to_regclass('schema_migrations') IS NOT NULL, version()"
        )
    except AgentError as exc:
        return CheckResult("database", False, str(exc))
    finally:
        db.close()
    migrated, version = rows[0]
    state = "migrated" if migrated else "not migrated yet (any command migrates it)"
    return CheckResult("database", True, f"{str(version).split(' on ')[0]}; {state}")


def check_providers(settings: Settings) -> list[CheckResult]:
    """Collect each configured provider's own checks."""
    results: list[CheckResult] = []
    for name, factory in REGISTRY.items():
        try:
            provider = factory(settings, threading.Event())
        except ProviderError as exc:
            results.append(CheckResult(name, False, str(exc)))
            continue
        if provider is None:
            continue
        try:
            results.extend(provider.check())
        finally:
            provider.close()
    return results


def check_mhq(settings: Settings) -> list[CheckResult]:
    """Send HEAD to the webhook URL, and to the heartbeat URL if that differs."""
    urls = {"mhq webhook": settings.get("mhq.webhook_url")}
    heartbeat = settings.get("mhq.heartbeat_url")
    if heartbeat and heartbeat != urls["mhq webhook"]:
        urls["mhq heartbeat"] = heartbeat
    return [_probe(name, url) for name, url in urls.items()]


def _probe(name: str, url: str) -> CheckResult:
    masked_url = mask(url)
    try:
        response = requests.head(
            url,
            timeout=(5, 10),
            allow_redirects=False,
            headers={"User-Agent": f"mhq-sync-agent/{__version__}"},
        )
    except requests.exceptions.SSLError as exc:
        return CheckResult(
            name,
            False,
            f"TLS verification of {masked_url} failed ({_first_line(exc)}); check the "
            "URL and the system's CA certificates",
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        return CheckResult(
            name, False, f"{masked_url} is unreachable ({type(exc).__name__})"
        )
    if response.status_code in UNAVAILABLE:
        return CheckResult(
            name,
            False,
            f"{masked_url} answered {response.status_code}: MHQ is unavailable now",
        )
    return CheckResult(
        name,
        True,
        f"{masked_url} reachable (HTTP {response.status_code} to HEAD, "
        "so nothing was sent)",
    )


def _first_line(exc: Exception) -> str:
    return mask(str(exc)).splitlines()[0][:200] if str(exc) else type(exc).__name__
