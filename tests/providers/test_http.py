"""HostClient.get_json against the fake GitLab: retries, errors, limits, secrecy."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent import logs
from agent.errors import (
    AuthError,
    NotFoundError,
    ProviderError,
    ProviderRetryableError,
    RetryableError,
)
from agent.providers.http import HostClient, HttpSettings, Interrupted
from tests.fakes.gitlab import FakeGitLab

MR_LIST = r"/merge_requests$"
PROJECT = "12345678"


def make_client(
    fake: FakeGitLab,
    token: str | None = None,
    stop: threading.Event | None = None,
    **overrides: float,
) -> HostClient:
    """Return a client with short backoffs, so that retries cost milliseconds."""
    values: dict[str, float] = {
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "retry_budget_s": 10.0,
        "timeout_s": 5.0,
        **overrides,
    }
    settings = HttpSettings(
        max_concurrency=int(values.pop("max_concurrency", 4)),
        max_attempts=int(values.pop("max_attempts", 8)),
        **values,
    )
    headers = {"PRIVATE-TOKEN": token or fake.token}
    return HostClient("gitlab", fake.api_url, headers, settings, stop=stop)


@pytest.fixture
def client(fake_gitlab: FakeGitLab) -> Iterator[HostClient]:
    running = make_client(fake_gitlab)
    yield running
    running.session.close()


def mr_url(fake: FakeGitLab) -> str:
    return f"{fake.api_url}/projects/{PROJECT}/merge_requests"


def request_gap(fake: FakeGitLab, pattern: str = MR_LIST) -> float:
    """Return seconds between the starts of the first two matching requests."""
    first, second = fake.requests(pattern)[:2]
    return second.time - first.time


# -- success and retries -------------------------------------------------------------


def test_get_json_returns_page(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    result = client.get_json(mr_url(fake_gitlab), {"per_page": 5})

    assert isinstance(result.data, list)
    assert len(result.data) == 5
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_retry_after_429(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    fake_gitlab.add_fault(MR_LIST, status=429, headers={"Retry-After": "1"})

    result = client.get_json(mr_url(fake_gitlab), {"per_page": 5})

    assert len(result.data) == 5
    assert fake_gitlab.request_count(MR_LIST) == 2
    assert request_gap(fake_gitlab) >= 0.95
    assert request_gap(fake_gitlab) < 1.6


def test_retry_after_http_date(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    # An HTTP date has whole seconds, so "now + 2 s" means a wait of 1 to 2 seconds.
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    fake_gitlab.add_fault(MR_LIST, status=503, headers={"Retry-After": when})

    client.get_json(mr_url(fake_gitlab))

    assert request_gap(fake_gitlab) >= 0.95
    assert request_gap(fake_gitlab) < 2.6


def test_429_waits_for_rate_limit_reset(
    fake_gitlab: FakeGitLab, client: HostClient
) -> None:
    reset = f"{time.time() + 1.0:.3f}"
    fake_gitlab.add_fault(MR_LIST, status=429, headers={"RateLimit-Reset": reset})

    client.get_json(mr_url(fake_gitlab))

    assert fake_gitlab.request_count(MR_LIST) == 2
    assert request_gap(fake_gitlab) >= 0.9


@pytest.mark.parametrize("status", [500, 502, 503])
def test_retries_server_error(
    status: int, fake_gitlab: FakeGitLab, client: HostClient
) -> None:
    fake_gitlab.add_fault(MR_LIST, status=status, times=2)

    result = client.get_json(mr_url(fake_gitlab), {"per_page": 5})

    assert len(result.data) == 5
    assert fake_gitlab.request_count(MR_LIST) == 3


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("reset", id="connection-reset"),
        pytest.param("truncate", id="body-cut-short"),
        pytest.param("html", id="html-with-200"),
    ],
)
def test_retries_broken_response(
    mode: str, fake_gitlab: FakeGitLab, client: HostClient
) -> None:
    fake_gitlab.add_fault(MR_LIST, mode=mode)  # type: ignore[arg-type]

    result = client.get_json(mr_url(fake_gitlab), {"per_page": 5})

    assert len(result.data) == 5
    assert fake_gitlab.request_count(MR_LIST) == 2


def test_retry_logged(
    fake_gitlab: FakeGitLab, client: HostClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    fake_gitlab.add_fault(MR_LIST, status=503)

    client.get_json(mr_url(fake_gitlab))
    retries = [r for r in caplog.records if r.getMessage() == "http retry"]

    assert len(retries) == 1
    assert retries[0].attempt == 1  # type: ignore[attr-defined]
    assert retries[0].reason == "status 503"  # type: ignore[attr-defined]


# -- giving up -----------------------------------------------------------------------


def test_gives_up_within_budget(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(MR_LIST, status=503, times=None)
    client = make_client(
        fake_gitlab,
        retry_budget_s=1.0,
        backoff_base_s=0.2,
        backoff_cap_s=0.3,
        max_attempts=100,
    )
    started = time.monotonic()

    with pytest.raises(ProviderRetryableError) as caught:
        client.get_json(mr_url(fake_gitlab))
    elapsed = time.monotonic() - started

    assert caught.value.status == 503
    assert elapsed <= 1.0 + 0.3
    assert fake_gitlab.request_count(MR_LIST) >= 2


def test_gives_up_after_max_attempts(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(MR_LIST, mode="reset", times=None)
    client = make_client(fake_gitlab, max_attempts=3)

    with pytest.raises(ProviderRetryableError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert fake_gitlab.request_count(MR_LIST) == 3
    assert "3 attempts" in str(caught.value)


def test_retry_after_beyond_budget(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(
        MR_LIST, status=429, headers={"Retry-After": "30"}, times=None
    )
    client = make_client(fake_gitlab, retry_budget_s=2.0)
    started = time.monotonic()

    with pytest.raises(ProviderRetryableError):
        client.get_json(mr_url(fake_gitlab))

    assert time.monotonic() - started < 1.0
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_slow_failures_stay_in_budget(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(MR_LIST, status=503, delay_s=0.4, times=None)
    client = make_client(fake_gitlab, retry_budget_s=1.0, max_attempts=100)
    started = time.monotonic()

    with pytest.raises(ProviderRetryableError):
        client.get_json(mr_url(fake_gitlab))

    assert time.monotonic() - started <= 1.0 + 0.15


def test_malformed_retry_after(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    fake_gitlab.add_fault(MR_LIST, status=503, headers={"Retry-After": "soon"})

    result = client.get_json(mr_url(fake_gitlab), {"per_page": 5})

    assert len(result.data) == 5


# -- errors that are not retried -----------------------------------------------------


def test_401_auth_error(fake_gitlab: FakeGitLab) -> None:
    client = make_client(fake_gitlab, token="glpat-revoked-token")

    with pytest.raises(AuthError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert caught.value.status == 401
    assert "access token" in str(caught.value)
    assert "create a new one" in str(caught.value)
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_403_auth_error(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    fake_gitlab.add_fault(
        MR_LIST, status=403, body={"message": "403 Forbidden - insufficient_scope"}
    )

    with pytest.raises(AuthError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert caught.value.status == 403
    assert "scope" in str(caught.value)
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_404_not_found(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_json(f"{fake_gitlab.api_url}/projects/999999/merge_requests")

    assert caught.value.status == 404
    assert fake_gitlab.request_count(r"/projects/999999/") == 1


def test_400_not_retried(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    fake_gitlab.add_fault(MR_LIST, status=400, body={"error": "per_page is invalid"})

    with pytest.raises(ProviderError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert not isinstance(caught.value, RetryableError)
    assert "per_page is invalid" in str(caught.value)
    assert fake_gitlab.request_count(MR_LIST) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_not_retryable(
    status: int, fake_gitlab: FakeGitLab, client: HostClient
) -> None:
    fake_gitlab.add_fault(MR_LIST, status=status)

    with pytest.raises(ProviderError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert not isinstance(caught.value, RetryableError)


# -- RateLimit headers ---------------------------------------------------------------


def test_rate_limit_pauses_next(fake_gitlab: FakeGitLab, client: HostClient) -> None:
    headers = {
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": f"{time.time() + 1.0:.3f}",
    }
    fake_gitlab.add_fault(MR_LIST, status=200, body=[], headers=headers)

    client.get_json(mr_url(fake_gitlab))
    client.get_json(mr_url(fake_gitlab))

    assert request_gap(fake_gitlab) >= 0.9
    assert request_gap(fake_gitlab) < 1.6


def test_rate_limit_remaining_no_pause(
    fake_gitlab: FakeGitLab, client: HostClient
) -> None:
    headers = {
        "RateLimit-Remaining": "5",
        "RateLimit-Reset": f"{time.time() + 1.0:.3f}",
    }
    fake_gitlab.add_fault(MR_LIST, status=200, body=[], headers=headers)

    client.get_json(mr_url(fake_gitlab))
    client.get_json(mr_url(fake_gitlab))

    assert request_gap(fake_gitlab) < 0.5


def test_rate_limit_beyond_budget(fake_gitlab: FakeGitLab) -> None:
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": str(time.time() + 30)}
    fake_gitlab.add_fault(MR_LIST, status=200, body=[], headers=headers)
    client = make_client(fake_gitlab, retry_budget_s=2.0)
    client.get_json(mr_url(fake_gitlab))
    started = time.monotonic()

    with pytest.raises(ProviderRetryableError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert caught.value.code == "rate_limited"
    assert time.monotonic() - started < 1.0
    assert fake_gitlab.request_count(MR_LIST) == 1


# -- shutdown ------------------------------------------------------------------------


def test_stop_during_retry_wait(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(
        MR_LIST, status=503, headers={"Retry-After": "30"}, times=None
    )
    stop = threading.Event()
    client = make_client(fake_gitlab, stop=stop, retry_budget_s=60.0)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()

    try:
        with pytest.raises(Interrupted):
            client.get_json(mr_url(fake_gitlab))
    finally:
        timer.cancel()

    assert time.monotonic() - started < 2.0
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_stop_during_rate_limit_pause(fake_gitlab: FakeGitLab) -> None:
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": str(time.time() + 30)}
    fake_gitlab.add_fault(MR_LIST, status=200, body=[], headers=headers)
    stop = threading.Event()
    client = make_client(fake_gitlab, stop=stop, retry_budget_s=60.0)
    client.get_json(mr_url(fake_gitlab))
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()

    try:
        with pytest.raises(Interrupted):
            client.get_json(mr_url(fake_gitlab))
    finally:
        timer.cancel()

    assert time.monotonic() - started < 2.0
    assert fake_gitlab.request_count(MR_LIST) == 1


def test_stop_before_request(fake_gitlab: FakeGitLab) -> None:
    stop = threading.Event()
    stop.set()
    client = make_client(fake_gitlab, stop=stop)

    with pytest.raises(Interrupted):
        client.get_json(mr_url(fake_gitlab))

    assert fake_gitlab.request_count(MR_LIST) == 0


# -- concurrency ---------------------------------------------------------------------


def max_in_flight(starts: list[float], duration: float) -> int:
    """Return how many requests overlapped at most, each lasting ``duration``."""
    # The fake logs when each request arrived, and each one then lasts the fault delay.
    margin = 0.05
    return max(
        sum(1 for other in starts if other <= start < other + duration - margin)
        for start in starts
    )


def test_concurrency_limit(fake_gitlab: FakeGitLab) -> None:
    delay = 0.4
    fake_gitlab.add_fault(MR_LIST, delay_s=delay, times=None)
    client = make_client(fake_gitlab, max_concurrency=2)
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda _: client.get_json(mr_url(fake_gitlab)), range(6))
        )
    elapsed = time.monotonic() - started
    starts = [entry.time for entry in fake_gitlab.requests(MR_LIST)]

    assert len(results) == 6
    assert len(starts) == 6
    assert max_in_flight(starts, delay) == 2
    assert elapsed >= 3 * delay * 0.95


# -- the token stays secret ----------------------------------------------------------

SCENARIOS = ["success", "401", "403", "404", "503-gives-up", "reset-gives-up"]


def run_scenario(name: str, fake: FakeGitLab, token: str) -> Exception | None:
    """Run one request scenario and return the exception it raised, if any."""
    if name == "401":
        fake.set_token("glpat-the-accepted-token")
    faults = {
        "403": {"status": 403},
        "503-gives-up": {"status": 503, "times": None},
        "reset-gives-up": {"mode": "reset", "times": None},
    }
    if name in faults:
        fake.add_fault(MR_LIST, **faults[name])  # type: ignore[arg-type]
    client = make_client(fake, token=token, max_attempts=2)
    url = mr_url(fake)
    if name == "404":
        url = f"{fake.api_url}/projects/999999/merge_requests"
    try:
        client.get_json(url)
    except ProviderError as exc:
        return exc
    return None


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_token_absent_from_errors(scenario: str, fake_gitlab: FakeGitLab) -> None:
    token = fake_gitlab.token

    error = run_scenario(scenario, fake_gitlab, token)

    assert (error is None) == (scenario == "success")
    assert token not in str(error)
    assert token not in repr(error)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_token_absent_from_logs(
    scenario: str, fake_gitlab: FakeGitLab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake_gitlab.token

    run_scenario(scenario, fake_gitlab, token)
    agent_records = [r for r in caplog.records if r.name.startswith("agent")]

    assert agent_records
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in repr(vars(record))


def test_echoed_token_masked(
    fake_gitlab: FakeGitLab, client: HostClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI registers every configured secret, and this fresh masker replaces it here.
    masker = logs.SecretMasker()
    masker.register([fake_gitlab.token])
    monkeypatch.setattr(logs, "masker", masker)
    body = {"message": f"403 Forbidden - token {fake_gitlab.token} lacks read_api"}
    fake_gitlab.add_fault(MR_LIST, status=403, body=body)

    with pytest.raises(AuthError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert fake_gitlab.token not in str(caught.value)
    assert "lacks read_api" in str(caught.value)


def test_query_token_masked(
    fake_gitlab: FakeGitLab, client: HostClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    secret = "glpat-query-secret"
    url = f"{fake_gitlab.api_url}/projects/999999/merge_requests?private_token={secret}"

    with pytest.raises(NotFoundError) as caught:
        client.get_json(url)
    agent_records = [r for r in caplog.records if r.name.startswith("agent")]

    assert secret not in str(caught.value)
    assert agent_records
    for record in agent_records:
        assert secret not in repr(vars(record))


def test_header_error_hides_token(fake_gitlab: FakeGitLab) -> None:
    token = "glpat-first-half\nsecond-half"
    client = make_client(fake_gitlab, token=token)

    with pytest.raises(ProviderError) as caught:
        client.get_json(mr_url(fake_gitlab))

    assert "glpat-first-half" not in str(caught.value)


def test_request_budget_paces_requests(fake_gitlab: FakeGitLab) -> None:
    settings = HttpSettings(
        max_concurrency=4, retry_budget_s=10, requests_per_window=5, rate_window_s=1.0
    )
    client = HostClient(
        "gitlab",
        fake_gitlab.api_url,
        {"PRIVATE-TOKEN": "glpat-test-token"},
        settings,
    )

    for _ in range(15):
        client.get_json(f"{fake_gitlab.api_url}/user")

    times = sorted(entry.time for entry in fake_gitlab.requests(r"/user$"))
    assert len(times) == 15
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 5
    assert times[-1] - times[0] >= 2.0
