"""GitLab pagination: Link, X-Next-Page, other origins, missing totals, bad bodies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from agent.errors import ProviderError, RetryableError
from agent.providers.gitlab.pagination import paginate
from agent.providers.http import HostClient, HttpSettings
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.gitlab_data import SNOWFLAKE_SPEND

SETTINGS = HttpSettings(backoff_base_s=0.01, backoff_cap_s=0.05, retry_budget_s=5.0)


@dataclass
class ListServer:
    """A list endpoint on 127.0.0.1 that sends only the paging headers a test picks.

    ``style`` is "x-next-page" (no Link), "link" (no X-Next-Page) or "both".
    ``link_origin`` replaces the origin in Link URLs, ``total`` sets an X-Total
    header that may disagree with the items.
    """

    items: list[dict[str, Any]]
    style: str = "x-next-page"
    link_origin: str | None = None
    total: int | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def page(
        self, path: str, query: dict[str, str]
    ) -> tuple[list[Any], dict[str, str]]:
        self.requests.append(query)
        number = int(query.get("page", "1"))
        per_page = int(query.get("per_page", "20"))
        start = (number - 1) * per_page
        has_next = start + per_page < len(self.items)
        headers: dict[str, str] = {}
        if self.style in ("x-next-page", "both"):
            headers["X-Next-Page"] = str(number + 1) if has_next else ""
        if self.style in ("link", "both") and has_next:
            origin = self.link_origin or self.url
            next_query = urlencode({**query, "page": str(number + 1)})
            headers["Link"] = f'<{origin}{path}?{next_query}>; rel="next"'
        if self.total is not None:
            headers["X-Total"] = str(self.total)
        return self.items[start : start + per_page], headers


def make_handler(server: ListServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            body_items, headers = server.page(split.path, dict(parse_qsl(split.query)))
            body = json.dumps(body_items).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Start ListServers on 127.0.0.1, port 0, and stop every one after the test."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(server: ListServer) -> ListServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(server))
        httpd.daemon_threads = True
        server.httpd = httpd
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        started.append((httpd, thread))
        return server

    yield start
    for httpd, thread in started:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def items(count: int) -> list[dict[str, Any]]:
    return [{"id": number} for number in range(1, count + 1)]


def collect(client: HostClient, url: str, params: dict[str, Any]) -> list[list[Any]]:
    return list(paginate(client, url, params))


def ids_of(pages: list[list[dict[str, Any]]]) -> list[Any]:
    return [item["id"] for page in pages for item in page]


def client_for(base_url: str, token: str = "glpat-test-token") -> HostClient:
    return HostClient("gitlab", base_url, {"PRIVATE-TOKEN": token}, SETTINGS)


# -- against the fake GitLab ---------------------------------------------------------


@pytest.mark.parametrize("totals_limit", [0, 10], ids=["no-totals", "low-limit"])
def test_follows_every_page(totals_limit: int) -> None:
    with FakeGitLab(totals_limit=totals_limit) as fake:
        expected = sorted(
            r["id"] for r in fake.project(SNOWFLAKE_SPEND).merge_requests.values()
        )
        client = client_for(fake.api_url, fake.token)
        url = f"{fake.api_url}/projects/12345678/merge_requests"

        pages = collect(client, url, {"per_page": 5, "state": "all"})
        first_response = fake.requests(r"/merge_requests$")[0]

    ids = ids_of(pages)
    assert len(expected) > 10
    assert first_response.status == 200
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected
    assert len(pages) == -(-len(expected) // 5)


def test_no_totals_headers_sent() -> None:
    with FakeGitLab(totals_limit=0) as fake:
        client = client_for(fake.api_url, fake.token)
        url = f"{fake.api_url}/projects/12345678/merge_requests"

        result = client.get_json(url, {"per_page": 5})

    assert "X-Total" not in result.response.headers
    assert 'rel="last"' not in result.response.headers["Link"]


def test_first_page_sets_per_page(fake_gitlab: FakeGitLab) -> None:
    client = client_for(fake_gitlab.api_url, fake_gitlab.token)
    url = f"{fake_gitlab.api_url}/projects/12345678/merge_requests"

    collect(client, url, {})
    first = fake_gitlab.requests(r"/merge_requests$")[0]

    assert first.query["per_page"] == "100"


def test_non_list_body(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_fault(
        r"/merge_requests$", status=200, body={"message": "not a list"}
    )
    client = client_for(fake_gitlab.api_url, fake_gitlab.token)
    url = f"{fake_gitlab.api_url}/projects/12345678/merge_requests"

    with pytest.raises(ProviderError) as caught:
        collect(client, url, {})

    assert not isinstance(caught.value, RetryableError)
    assert "dict" in str(caught.value)


def test_other_origin_link_not_followed(
    fake_gitlab: FakeGitLab, start_server: Any
) -> None:
    decoy = start_server(ListServer(items(3)))
    url = f"{fake_gitlab.api_url}/projects/12345678/merge_requests"
    first_page = [{"id": 1}, {"id": 2}]
    fake_gitlab.add_fault(
        r"/merge_requests$",
        status=200,
        body=first_page,
        headers={
            "Link": f'<{decoy.url}/api/v4/steal?page=2>; rel="next"',
            "X-Next-Page": "2",
        },
    )
    client = client_for(fake_gitlab.api_url, fake_gitlab.token)

    pages = collect(client, url, {"per_page": 5})
    second = fake_gitlab.requests(r"/merge_requests$")[1]

    assert decoy.requests == []
    assert pages[0] == first_page
    assert second.query["page"] == "2"
    assert second.query["per_page"] == "5"


# -- header variants, on a list server of the test's own -----------------------------


def test_x_next_page_without_link(start_server: Any) -> None:
    server = start_server(ListServer(items(12), style="x-next-page"))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert ids_of(pages) == list(range(1, 13))
    assert [len(page) for page in pages] == [5, 5, 2]


def test_x_next_page_keeps_query(start_server: Any) -> None:
    server = start_server(ListServer(items(12), style="x-next-page"))
    client = client_for(server.url)

    collect(client, f"{server.url}/api/v4/things", {"per_page": 5, "state": "all"})

    assert [query.get("page", "1") for query in server.requests] == ["1", "2", "3"]
    assert all(query["per_page"] == "5" for query in server.requests)
    assert all(query["state"] == "all" for query in server.requests)


def test_link_without_x_next_page(start_server: Any) -> None:
    server = start_server(ListServer(items(12), style="link"))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert ids_of(pages) == list(range(1, 13))


def test_other_origin_falls_back(start_server: Any) -> None:
    decoy = start_server(ListServer(items(12)))
    server = start_server(ListServer(items(12), style="both", link_origin=decoy.url))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert decoy.requests == []
    assert ids_of(pages) == list(range(1, 13))


def test_other_origin_only_link(start_server: Any) -> None:
    decoy = start_server(ListServer(items(12)))
    server = start_server(ListServer(items(12), style="link", link_origin=decoy.url))
    client = client_for(server.url)

    with pytest.raises(ProviderError, match="another host"):
        collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert decoy.requests == []


def test_totals_ignored(start_server: Any) -> None:
    server = start_server(ListServer(items(12), style="x-next-page", total=5))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert ids_of(pages) == list(range(1, 13))


def test_single_page(start_server: Any) -> None:
    server = start_server(ListServer(items(3), style="both"))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert pages == [items(3)]
    assert len(server.requests) == 1


def test_empty_list(start_server: Any) -> None:
    server = start_server(ListServer([], style="both"))
    client = client_for(server.url)

    pages = collect(client, f"{server.url}/api/v4/things", {"per_page": 5})

    assert pages == [[]]
