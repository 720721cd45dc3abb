"""The interface every provider implements, and what it hands to the fetch job.

A provider turns configured repository entries into ``RepositoryRef``s and fetches
each repository as a stream of ``Page``s. The fetch job commits one page, with its
bookmark, per transaction, so an interrupted fetch resumes after the last commit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.processing.records import Record


@dataclass(frozen=True)
class RepositoryRef:
    """A repository to sync; ``key`` is host + full path and names it everywhere."""

    provider: str
    key: str
    api_id: str
    web_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ResolveFailure:
    """A configured entry that could not be turned into repositories."""

    entry: str
    error: Exception


@dataclass(frozen=True)
class ChildSet:
    """The complete set of child records one parent has upstream now.

    Stored children of ``parent_id`` that are not in ``keys`` no longer exist
    upstream; the store deletes them and queues a deletion record for each.
    """

    entity: str
    parent_id: str
    keys: frozenset[str]
    # Only stored children whose key starts with this are compared, e.g. "approval:".
    key_prefix: str = ""


@dataclass(frozen=True)
class RecordFailure:
    """A raw object that could not be mapped; reported with its id, not fatal."""

    entity: str
    raw_id: str | None
    reason: str


@dataclass
class Page:
    """One unit of work committed atomically: records, children and the bookmark."""

    stream: str
    records: list[Record] = field(default_factory=list)
    versions: dict[tuple[str, str], str] = field(default_factory=dict)
    children: list[ChildSet] = field(default_factory=list)
    bookmark: str | None = None
    items: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


class StateView(Protocol):
    """The stored state a provider reads while fetching one repository."""

    def bookmark(self, stream: str) -> str | None: ...

    def versions(self, entity: str, keys: Sequence[str]) -> dict[str, str]:
        """Return the stored ``source_version`` of each of ``keys`` that exists."""
        ...

    def children(
        self, entity: str, parent_id: str, key_prefix: str = ""
    ) -> dict[str, dict[str, Any]]:
        """Return the stored payloads of a parent's children, by record key."""
        ...


@dataclass(frozen=True)
class CheckResult:
    """One line of ``mhq-agent check``: what was checked, whether it passed, and why."""

    name: str
    ok: bool
    detail: str


class Provider(ABC):
    """A code host. Adding one means a module of its own and one registry entry."""

    name: str
    streams: tuple[str, ...]

    @abstractmethod
    def resolve(self) -> Iterator[RepositoryRef | ResolveFailure]:
        """Expand the configured entries (URLs, ids, groups) into repositories."""

    @abstractmethod
    def fetch(
        self, repository: RepositoryRef, stream: str, state: StateView
    ) -> Iterator[Page]:
        """Yield the pages of one stream of ``repository`` changed since its bookmark.

        Raises ProviderError for the stream; the other streams still run.
        """

    @property
    @abstractmethod
    def request_count(self) -> int:
        """HTTP requests made so far, for the run summary."""

    def check(self) -> list[CheckResult]:
        """Verify the token's scopes and access to each configured repository.

        Only reads from the code host and stores nothing. The default has no checks;
        a provider overrides it to contribute lines to ``mhq-agent check``.
        """
        return []

    def close(self) -> None:  # noqa: B027 - optional hook; most providers need it
        """Release sessions and worker threads."""
