"""GitLab's offset pagination, followed by the headers GitLab sends.

A list response looks like::

    HTTP/1.1 200 OK
    Link: <https://gitlab.example.com/api/v4/projects/1/pipelines?page=2>; rel="next",
          <https://gitlab.example.com/api/v4/projects/1/pipelines?page=1>; rel="first"
    X-Page: 1
    X-Per-Page: 100
    X-Next-Page: 2
    X-Total: 2311          (omitted by GitLab for large lists)

    [{"id": 32348491, "iid": 1, ...}, ...]

The next page is the ``Link`` rel="next" URL, or ``X-Next-Page`` when a proxy drops
the ``Link`` header. Totals and page counts are never used to decide where to stop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agent.errors import ProviderError
from agent.logs import mask
from agent.providers.http import HostClient

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100


def paginate(
    client: HostClient, url: str, params: dict[str, Any] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield each page's list of objects until GitLab reports no next page."""
    query: dict[str, Any] | None = {"per_page": MAX_PER_PAGE, **(params or {})}
    next_url: str | None = url
    while next_url:
        result = client.get_json(next_url, query)
        if not isinstance(result.data, list):
            raise ProviderError(
                f"gitlab returned {type(result.data).__name__} for a list at {url}, "
                "expected a JSON array"
            )
        items = [item for item in result.data if isinstance(item, dict)]
        if len(items) < len(result.data):
            log.warning(
                "list items that are not objects skipped",
                extra={"url": mask(url), "skipped": len(result.data) - len(items)},
            )
        yield items
        next_url = _next_url(client, next_url, query, result.next_url, result.response)
        query = None


def _next_url(
    client: HostClient,
    current: str,
    query: dict[str, Any] | None,
    link_next: str | None,
    response: Any,
) -> str | None:
    # A Link to another origin would receive the token, so it is not followed as is.
    if link_next and client.same_origin(link_next):
        return link_next
    next_page = (response.headers.get("X-Next-Page") or "").strip()
    if next_page:
        return _with_page(current, query, next_page)
    if link_next:
        raise ProviderError(
            f"gitlab's next-page link {mask(link_next)} points to another host than "
            f"{client.base_url}; set GITLAB_DOMAIN_URL to the external URL GitLab "
            "is configured with",
            code="pagination_error",
        )
    return None


def _with_page(url: str, query: dict[str, Any] | None, page: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.update({k: str(v) for k, v in (query or {}).items()})
    params["page"] = page
    return urlunsplit(parts._replace(query=urlencode(params)))
