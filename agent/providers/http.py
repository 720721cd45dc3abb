"""HTTP for code hosts: one session per host, a concurrency limit, bounded retries.

Retries cover 429, 5xx, connection errors, timeouts, bodies cut short and error pages
served with status 200; they back off exponentially with full jitter and honour
``Retry-After`` and ``RateLimit-Reset``, within ``retry_budget_s`` per request.

Three limits pace the requests to one host. At most ``max_concurrency`` are in flight,
and at most ``requests_per_window`` start in any ``rate_window_s``. When the host's
``RateLimit-Remaining`` runs low, the remaining requests are spread evenly until its
``RateLimit-Reset``, and at 0 they wait for the reset.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from agent import __version__
from agent.errors import (
    AgentError,
    AuthError,
    NotFoundError,
    ProviderError,
    ProviderRetryableError,
)
from agent.logs import mask

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Below this share of RateLimit-Limit remaining, requests are spread until the reset.
LOW_REMAINING_SHARE = 0.1
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class Interrupted(AgentError):
    """The agent is shutting down; the caller stops before its next page."""


@dataclass(frozen=True)
class HttpSettings:
    max_concurrency: int = 4
    timeout_s: float = 30.0
    retry_budget_s: float = 120.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    # At most this many requests start within any rate_window_s; None: no limit.
    requests_per_window: int | None = None
    rate_window_s: float = 3600.0


@dataclass
class JsonResponse:
    data: Any
    response: requests.Response

    @property
    def next_url(self) -> str | None:
        return self.response.links.get("next", {}).get("url")


class HostClient:
    """GET requests to one host, shared by every thread that talks to it."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: dict[str, str],
        settings: HttpSettings,
        *,
        verify: bool | str = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.stop = stop or threading.Event()
        self.request_count = 0
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._sent_at: collections.deque[float] = collections.deque()
        # The gap between request starts while the host's rate limit runs low, the
        # time the gap applies until, and the earliest start of the next request.
        self._spacing_s = 0.0
        self._spacing_until = 0.0
        self._next_start = 0.0
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=settings.max_concurrency, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(headers)
        self.session.headers["User-Agent"] = f"mhq-sync-agent/{__version__}"
        self.session.headers["Accept"] = "application/json"
        # TLS verification stays on: True uses the system CAs, a path uses that PEM
        # bundle instead. It is passed on every request, because requests lets
        # REQUESTS_CA_BUNDLE in the environment override a session-level setting.
        self._verify = verify

    def same_origin(self, url: str) -> bool:
        base, other = urlsplit(self.base_url), urlsplit(url)
        return (base.scheme, base.netloc) == (other.scheme, other.netloc)

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> JsonResponse:
        """GET ``url`` and decode its JSON body, retrying what is worth retrying.

        Raises AuthError (401/403), NotFoundError (404), ProviderRetryableError when
        retries ran out, ProviderError otherwise, and Interrupted on shutdown.
        """
        deadline = time.monotonic() + self.settings.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_rate_limit(deadline)
            # A retry may only use what is left of the budget; the first attempt
            # always gets the full timeout.
            timeout = self.settings.timeout_s
            if attempt > 1:
                timeout = min(timeout, max(0.1, deadline - time.monotonic()))
            outcome = self._attempt(url, params, timeout)
            if isinstance(outcome, JsonResponse):
                return outcome
            delay = self._retry_delay(outcome, attempt)
            if attempt >= self.settings.max_attempts or (
                time.monotonic() + delay > deadline
            ):
                raise ProviderRetryableError(
                    f"{self.provider} request {mask(url)} failed after {attempt} "
                    f"attempts: {_describe(outcome)}",
                    status=_status(outcome),
                    code="unavailable",
                )
            log.warning(
                "http retry",
                extra={
                    "provider": self.provider,
                    "url": mask(url),
                    "attempt": attempt,
                    "reason": _describe(outcome),
                    "retry_in_s": round(delay, 2),
                },
            )
            if self.stop.wait(delay):
                raise Interrupted("shutdown requested during a retry wait")

    def _attempt(
        self, url: str, params: dict[str, Any] | None, timeout: float
    ) -> JsonResponse | requests.Response | Exception:
        if self.stop.is_set():
            raise Interrupted("shutdown requested")
        with self._slots:
            self._pace()
            self._space()
            started = time.monotonic()
            try:
                response = self.session.get(
                    url,
                    params=params,
                    timeout=(min(10.0, timeout), timeout),
                    verify=self._verify,
                )
            except requests.exceptions.InvalidHeader:
                # Its message quotes the header, which contains the token.
                raise ProviderError(
                    f"{self.provider} request headers are invalid; check the access "
                    "token for stray characters (value not shown)",
                    code="invalid_token",
                ) from None
            except requests.exceptions.SSLError as exc:
                self._log_request(url, params, None, started)
                raise ProviderError(
                    f"TLS verification of {self.provider} at {mask(url)} failed "
                    f"({_first_reason(exc)}); if the host uses a private CA, set "
                    "GITLAB_CA_BUNDLE to its PEM bundle",
                    code="tls_error",
                ) from exc
            except _NETWORK_ERRORS as exc:
                self._log_request(url, params, None, started)
                return exc
        self._log_request(url, params, response.status_code, started)
        self._note_rate_limit(response)
        if response.status_code in RETRY_STATUSES:
            return response
        if response.status_code >= 400:
            raise _http_error(self.provider, url, response)
        try:
            return JsonResponse(response.json(), response)
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            return ProviderError(f"body is not JSON ({kind.split(';')[0]}): {exc}")

    def _pace(self) -> None:
        """Wait until a request fits the request budget of the sliding window.

        Pacing is planned waiting, not a failure: it is bounded by the window, not by
        the retry budget, and ends early on shutdown.
        """
        limit = self.settings.requests_per_window
        if limit is None:
            return
        # Counted over a slightly longer window, so that requests delayed on the
        # way still fit the server's own count.
        window = self.settings.rate_window_s + min(
            0.05 * self.settings.rate_window_s, 2.0
        )
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent_at and self._sent_at[0] <= now - window:
                    self._sent_at.popleft()
                if len(self._sent_at) < limit:
                    self._sent_at.append(now)
                    return
                wait = self._sent_at[0] + window - now
            log.info(
                "request budget reached, pacing",
                extra={"provider": self.provider, "wait_s": round(wait, 2)},
            )
            if self.stop.wait(wait):
                raise Interrupted("shutdown requested while pacing requests")

    def _space(self) -> None:
        """Keep request starts ``_spacing_s`` apart while the host's limit runs low."""
        with self._lock:
            now = time.monotonic()
            if self._spacing_s <= 0 or now >= self._spacing_until:
                return
            start = max(now, self._next_start)
            self._next_start = start + self._spacing_s
            wait = start - now
        if wait <= 0:
            return
        log.debug(
            "rate limit running low, spacing requests",
            extra={"provider": self.provider, "wait_s": round(wait, 2)},
        )
        if self.stop.wait(wait):
            raise Interrupted("shutdown requested while spacing requests")

    def _log_request(
        self,
        url: str,
        params: dict[str, Any] | None,
        status: int | None,
        started: float,
    ) -> None:
        with self._lock:
            self.request_count += 1
        shown = url if not params else f"{url}?{_query(params)}"
        log.info(
            "http request",
            extra={
                "provider": self.provider,
                "method": "GET",
                "url": mask(shown),
                "status": status,
                "elapsed_ms": round((time.monotonic() - started) * 1000),
            },
        )

    def _retry_delay(self, outcome: object, attempt: int) -> float:
        if isinstance(outcome, requests.Response):
            waited = _retry_after(outcome)
            if waited is not None:
                return waited
        exponential = self.settings.backoff_base_s * 2 ** (attempt - 1)
        return random.uniform(0, min(self.settings.backoff_cap_s, exponential))

    def _note_rate_limit(self, response: requests.Response) -> None:
        """Pause at RateLimit-Remaining 0, and spread the requests left when it is low.

        Low is under a tenth of RateLimit-Limit or under two requests per slot,
        whichever is more.
        """
        headers = response.headers
        try:
            remaining = int(headers["RateLimit-Remaining"])
            reset_at = float(headers["RateLimit-Reset"])
            limit = int(headers.get("RateLimit-Limit") or 0)
        except (KeyError, ValueError):
            return
        # RateLimit-Reset is a Unix time on GitLab; convert to this clock.
        until_reset = max(0.0, reset_at - time.time())
        low = max(2 * self.settings.max_concurrency, LOW_REMAINING_SHARE * limit)
        with self._lock:
            now = time.monotonic()
            if remaining <= 0:
                self._paused_until = max(self._paused_until, now + until_reset)
            elif remaining < low:
                self._spacing_s = until_reset / remaining
                self._spacing_until = now + until_reset
                self._next_start = max(self._next_start, now + self._spacing_s)
            else:
                self._spacing_s = 0.0

    def _wait_for_rate_limit(self, deadline: float) -> None:
        with self._lock:
            pause = self._paused_until - time.monotonic()
        if pause <= 0:
            return
        if time.monotonic() + pause > deadline:
            raise ProviderRetryableError(
                f"{self.provider} rate limit exhausted for {round(pause)} s, longer "
                "than the retry budget",
                status=429,
                code="rate_limited",
            )
        log.warning(
            "rate limit reached, pausing",
            extra={"provider": self.provider, "pause_s": round(pause, 2)},
        )
        if self.stop.wait(pause):
            raise Interrupted("shutdown requested during a rate-limit pause")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                # Not seconds and not an HTTP date: fall back to exponential backoff.
                return None
            return max(0.0, parsed.timestamp() - time.time())
    reset = response.headers.get("RateLimit-Reset")
    if reset and response.status_code == 429:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None


def _http_error(provider: str, url: str, response: requests.Response) -> ProviderError:
    shown, status = mask(url), response.status_code
    detail = _error_detail(response)
    if status == 401:
        return AuthError(
            f"{provider} rejected the access token (401) for {shown}: the token is "
            "invalid, expired or revoked; create a new one and update it",
            status=status,
            code="unauthorized",
        )
    if status == 403:
        return AuthError(
            f"{provider} denied access (403) to {shown}{detail}: check that the "
            "token has the required scope and access to this project",
            status=status,
            code="forbidden",
        )
    if status == 404:
        return NotFoundError(
            f"{provider} returned 404 for {shown}: it does not exist or the token "
            "cannot see it",
            status=status,
            code="not_found",
        )
    return ProviderError(
        f"{provider} returned {status} for {shown}{detail}", status=status
    )


def _error_detail(response: requests.Response) -> str:
    """Return the error message of a GitLab or Bitbucket error body, in brackets.

    Bitbucket nests it (``{"error": {"message": ..., "detail": {"required": [...],
    "granted": [...]}}}``) and names the scopes a token lacks, which are kept.
    """
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    message = body.get("message") or (error if isinstance(error, str) else None)
    if isinstance(error, dict):
        message = error.get("message")
        scopes = error.get("detail")
        if isinstance(scopes, dict) and scopes.get("required"):
            message = (
                f"{message}; required scopes: {_join(scopes.get('required'))}; "
                f"granted: {_join(scopes.get('granted')) or 'none'}"
            )
    return f" ({mask(str(message))[:300]})" if message else ""


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) else ""


def _first_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "hostname"):
        if marker in text:
            start = text.find("[SSL") if "[SSL" in text else text.find(marker)
            return text[start : start + 120].split("')")[0]
    return text[:120]


def _describe(outcome: object) -> str:
    if isinstance(outcome, requests.Response):
        return f"status {outcome.status_code}"
    return f"{type(outcome).__name__}: {mask(str(outcome))[:200]}"


def _status(outcome: object) -> int | None:
    return outcome.status_code if isinstance(outcome, requests.Response) else None


def _query(params: dict[str, Any]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())
