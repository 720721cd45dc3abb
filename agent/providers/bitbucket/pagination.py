"""Bitbucket Cloud's pagination: follow each page's ``next`` URL exactly as given.

A page looks like::

    {
      "values": [{"id": 40, "title": "Test016", ...}, ...],
      "pagelen": 50,
      "page": 1,
      "size": 57,
      "next": "https://api.bitbucket.org/2.0/repositories/ws/repo/pullrequests?page=2&pagelen=50"
    }

``page`` and ``size`` are missing on some endpoints (the activity log) and are never
used; the last page has no ``next``. Page numbers are never built by the agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.errors import ProviderError
from agent.logs import mask
from agent.providers.http import HostClient


def paginate(
    client: HostClient, url: str, params: dict[str, Any] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield each page's ``values`` until a page has no ``next``."""
    next_url: str | None = url
    query = params
    while next_url:
        data = client.get_json(next_url, query).data
        if not isinstance(data, dict) or not isinstance(data.get("values"), list):
            raise ProviderError(
                f"bitbucket returned no 'values' list at {mask(next_url)}; expected a "
                "paginated response",
                code="unexpected_response",
            )
        yield [item for item in data["values"] if isinstance(item, dict)]
        next_url = data.get("next") or None
        query = None
        if next_url and not client.same_origin(next_url):
            raise ProviderError(
                f"bitbucket's next-page link {mask(next_url)} points to another host "
                f"than {client.base_url}; check BITBUCKET_API_URL",
                code="pagination_error",
            )
