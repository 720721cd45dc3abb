"""Bitbucket Cloud (REST API 2.0): resolve repositories and fetch them.

Bitbucket allows about 1,000 repository-data requests an hour per token, so the
provider reads endpoints that cover many pull requests per request: the
repository-wide activity log gives comments, approvals, requests for changes and
state changes of every pull request, and the pull request list, projected with
``fields=`` to add participants and reviewers, gives approval state. Only commits
need one request per changed pull request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from agent.config.settings import BitbucketSettings
from agent.errors import NotFoundError, ProviderError
from agent.processing.records import Record, utc_timestamp
from agent.providers.base import (
    CheckResult,
    ChildSet,
    Page,
    Provider,
    RecordFailure,
    RepositoryRef,
    ResolveFailure,
    StateView,
)
from agent.providers.bitbucket import mapping
from agent.providers.bitbucket.pagination import paginate
from agent.providers.http import HostClient, HttpSettings

log = logging.getLogger(__name__)

STREAMS = ("repository", "activity", "pull_requests", "pipelines", "deployments")
PULL_REQUEST_STATES = ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")
# Bitbucket's maximum page sizes: 50 for pull requests and activity, 100 elsewhere.
PULL_REQUEST_PAGE = 50
LIST_PAGE = 100
# Pipelines still running are read again on the next run, but no further back.
OPEN_PIPELINE_WINDOW = timedelta(days=3)
MAPPING_ERRORS = (ValueError, TypeError, AttributeError, KeyError)


class BitbucketProvider(Provider):
    name = "bitbucket"
    streams = STREAMS

    def __init__(
        self,
        settings: BitbucketSettings,
        http: HttpSettings,
        *,
        initial_days: int,
        stop: threading.Event | None = None,
    ) -> None:
        if not settings.access_token:
            raise ProviderError(
                "Bitbucket repositories are configured but no access token is set; "
                "set BITBUCKET_ACCESS_TOKEN or the SSM parameter bitbucket/access_token"
            )
        self.settings = settings
        self.api_url = settings.api_url.rstrip("/")
        self.client = HostClient(
            "bitbucket",
            self.api_url,
            {"Authorization": f"Bearer {settings.access_token}"},
            http,
            stop=stop,
        )
        self._initial_days = initial_days
        # Keys of the repositories whose activity log this run read to its end.
        self._activity_read: set[str] = set()
        self._pool = ThreadPoolExecutor(
            max_workers=http.max_concurrency, thread_name_prefix="bitbucket"
        )

    @property
    def request_count(self) -> int:
        return self.client.request_count

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.session.close()

    def check(self) -> list[CheckResult]:
        """Check the token, then read each repository's pull requests and pipelines.

        Bitbucket names a missing scope in its 403 response, which each failed
        line repeats. One request per repository and scope, and nothing is stored.
        """
        try:
            user = self.client.get_json(f"{self.api_url}/user").data
        except ProviderError as exc:
            return [CheckResult("bitbucket token", False, str(exc))]
        name = user.get("nickname") if isinstance(user, dict) else None
        results = [CheckResult("bitbucket token", True, f"accepted for user {name}")]
        for entry in self.resolve():
            if isinstance(entry, ResolveFailure):
                label = f"bitbucket repository {entry.entry}"
                results.append(CheckResult(label, False, str(entry.error)))
                continue
            results.append(self._check_repository(entry))
        return results

    def _check_repository(self, repository: RepositoryRef) -> CheckResult:
        label = f"bitbucket repository {repository.key}"
        base = self._repository_url(repository)
        for path in ("pullrequests", "pipelines/", "deployments/"):
            try:
                self.client.get_json(f"{base}/{path}", {"pagelen": 1})
            except ProviderError as exc:
                return CheckResult(label, False, str(exc))
        return CheckResult(
            label, True, "pull requests, pipelines and deployments readable"
        )

    # Resolving configured entries

    def resolve(self) -> Iterator[RepositoryRef | ResolveFailure]:
        seen: set[str] = set()
        for entry in self._entries():
            try:
                for raw in self._repositories_for(entry):
                    try:
                        ref = self._ref(raw)
                    except MAPPING_ERRORS as exc:
                        # One malformed repository object fails its entry alone.
                        error = ProviderError(
                            f"bitbucket returned an invalid repository object for "
                            f"{entry!r}: {exc}",
                            code="invalid_data",
                        )
                        yield ResolveFailure(entry, error)
                        continue
                    if ref.api_id not in seen:
                        seen.add(ref.api_id)
                        yield ref
            except ProviderError as exc:
                yield ResolveFailure(entry, exc)

    def _entries(self) -> tuple[str, ...]:
        """Return the configured entries; a lone workspace means all its repos."""
        if self.settings.repositories:
            return self.settings.repositories
        if self.settings.workspace_name:
            return (self.settings.workspace_name,)
        return ()

    def _repositories_for(self, entry: str) -> Iterator[dict[str, Any]]:
        parts = self._path_of(entry)
        if len(parts) == 1:
            url = f"{self.api_url}/repositories/{quote(parts[0])}"
            for page in paginate(self.client, url, {"pagelen": LIST_PAGE}):
                yield from page
            return
        url = f"{self.api_url}/repositories/{quote(parts[0])}/{quote(parts[1])}"
        yield self.client.get_json(url).data

    def _path_of(self, entry: str) -> list[str]:
        """Turn a repository or workspace URL, ``ws/slug`` or a bare slug into parts."""
        text = entry.strip()
        path = urlsplit(text).path if "://" in text else text
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2:
            return [parts[0], parts[1].removesuffix(".git")]
        if len(parts) == 1 and "://" not in text and self.settings.workspace_name:
            return [self.settings.workspace_name, parts[0]]
        if len(parts) == 1:
            return parts
        raise ProviderError(
            f"repository {entry!r} is not a Bitbucket repository or workspace URL, "
            "e.g. https://bitbucket.org/WORKSPACE/REPOSITORY",
            code="invalid_repository",
        )

    def _ref(self, raw: Any) -> RepositoryRef:
        """Build the reference to one repository object.

        Raises ValueError when the object has no ``workspace/slug`` full name or no
        uuid, because the key and every record id are made from them.
        """
        full_name = mapping.as_dict(raw).get("full_name")
        api_id = mapping.as_dict(raw).get("uuid")
        if not isinstance(full_name, str) or full_name.count("/") != 1:
            raise ValueError(f"expected full_name 'workspace/slug', got {full_name!r}")
        if not isinstance(api_id, str) or not api_id.strip("{}"):
            raise ValueError(f"expected a uuid, got {api_id!r}")
        web_url = mapping.html_url(raw)
        host = urlsplit(web_url).netloc if web_url else urlsplit(self.api_url).netloc
        return RepositoryRef(
            provider=self.name,
            key=f"{host}/{full_name}",
            api_id=api_id.strip("{}"),
            web_url=web_url,
            metadata={**raw, "_api_path": full_name},
        )

    # Fetching

    def fetch(
        self, repository: RepositoryRef, stream: str, state: StateView
    ) -> Iterator[Page]:
        fetchers: dict[str, Callable[[RepositoryRef, StateView], Iterator[Page]]] = {
            "repository": self._fetch_repository,
            "activity": self._fetch_activity,
            "pull_requests": self._fetch_pull_requests,
            "pipelines": self._fetch_pipelines,
            "deployments": self._fetch_deployments,
        }
        return fetchers[stream](repository, state)

    def _repository_url(self, repository: RepositoryRef) -> str:
        workspace, slug = repository.metadata["_api_path"].split("/", 1)
        return f"{self.api_url}/repositories/{quote(workspace)}/{quote(slug)}"

    def _initial_since(self) -> str | None:
        if self._initial_days <= 0:
            return None
        start = datetime.now(UTC) - timedelta(days=self._initial_days)
        return start.isoformat(timespec="seconds").replace("+00:00", "Z")

    def _fetch_repository(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        page = Page("repository", items=1)
        page.records.append(mapping.repository(repository, repository.metadata))
        yield page

    def _fetch_activity(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        """Read the activity log, newest first, down to the previous pass's newest.

        The bookmark moves only after a complete pass, in a final page of its own,
        because an interrupted newest-first pass would otherwise skip what lies
        between where it stopped and the previous bookmark.
        """
        floor = state.bookmark("activity") or self._initial_since()
        url = f"{self._repository_url(repository)}/pullrequests/activity"
        newest: str | None = None
        for raw_page in paginate(self.client, url, {"pagelen": PULL_REQUEST_PAGE}):
            page = Page("activity", items=len(raw_page))
            reached_floor = False
            for item in raw_page:
                when = mapping.activity_date(item)
                if floor and when and when < floor:
                    reached_floor = True
                    continue
                newest = max(newest or "", when or "") or None
                self._map_activity(repository, item, page)
            yield page
            if reached_floor:
                break
        yield Page("activity", bookmark=newest or state.bookmark("activity"))
        self._activity_read.add(repository.key)

    def _map_activity(
        self, repository: RepositoryRef, item: dict[str, Any], page: Page
    ) -> None:
        try:
            record = mapping.activity_event(repository, item)
        except MAPPING_ERRORS as exc:
            pr = mapping.as_dict(item.get("pull_request")).get("id")
            page.failures.append(
                RecordFailure("pull_request_events", str(pr), str(exc))
            )
            return
        if record is None:
            return
        page.records.extend(_users(mapping.activity_users(item)))
        page.records.append(record)

    def _fetch_pull_requests(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        since = state.bookmark("pull_requests") or self._initial_since()
        params: dict[str, Any] = {
            "state": list(PULL_REQUEST_STATES),
            "sort": "updated_on",
            "pagelen": PULL_REQUEST_PAGE,
            # Participants and reviewers are left out of list items by default;
            # descriptions and summaries are never needed.
            "fields": "+values.participants,+values.reviewers,"
            "-values.description,-values.summary",
        }
        if since:
            params["q"] = f'updated_on >= "{since}"'
        url = f"{self._repository_url(repository)}/pullrequests"
        activity_read = repository.key in self._activity_read
        seen: set[str] = set()
        for raw_page in paginate(self.client, url, params):
            # A pull request updated while the list is read moves to its end, so
            # it can appear twice in one pass.
            fresh = [pr for pr in raw_page if str(pr.get("id")) not in seen]
            seen.update(str(pr.get("id")) for pr in fresh)
            yield self._pull_request_page(repository, fresh, state, activity_read)

    def _pull_request_page(
        self,
        repository: RepositoryRef,
        raw_page: list[dict[str, Any]],
        state: StateView,
        activity_read: bool,
    ) -> Page:
        """Map the changed pull requests of one list page, with their commits.

        Merge and close times come from the activity log. When this run did not
        read it to its end, the bookmark stays where it was, so the next run lists
        these pull requests again and maps those still missing such a time.
        """
        page = Page("pull_requests", items=len(raw_page))
        ids = [mapping.pull_request_id(repository, pr.get("id")) for pr in raw_page]
        stored = state.versions("pull_requests", ids)
        changed = [
            (pr, pr_id)
            for pr, pr_id in zip(raw_page, ids, strict=True)
            if stored.get(pr_id) != mapping.version_of(pr, "updated_on")
        ]
        commits = {
            pr_id: self._pool.submit(self._commits, repository, pr.get("id"))
            for pr, pr_id in changed
        }
        for pr, pr_id in changed:
            self._add_pull_request(
                repository, pr, pr_id, commits[pr_id].result(), state, page
            )
        if not activity_read:
            for record in page.records:
                if record.entity == "pull_requests" and _lacks_close_time(record):
                    # A listed version is never empty, so the next run maps it again.
                    page.versions[("pull_requests", record.key)] = ""
            page.bookmark = state.bookmark("pull_requests")
            return page
        versions = [mapping.version_of(pr, "updated_on") for pr in raw_page]
        page.bookmark = max((v for v in versions if v), default=None) or state.bookmark(
            "pull_requests"
        )
        return page

    def _commits(self, repository: RepositoryRef, number: Any) -> list[dict[str, Any]]:
        url = f"{self._repository_url(repository)}/pullrequests/{number}/commits"
        params = {
            "pagelen": LIST_PAGE,
            "fields": "values.hash,values.date,values.message,values.author.raw,"
            "values.author.user.account_id,values.author.user.uuid,"
            "values.author.user.nickname,values.author.user.display_name,next",
        }
        commits: list[dict[str, Any]] = []
        try:
            for page in paginate(self.client, url, params):
                commits.extend(page)
        except NotFoundError:
            # The source branch of an old merged or declined pull request may be gone.
            return []
        return commits

    def _add_pull_request(
        self,
        repository: RepositoryRef,
        pr: dict[str, Any],
        pr_id: str,
        commits: list[dict[str, Any]],
        state: StateView,
        page: Page,
    ) -> None:
        events = state.children("pull_request_events", pr_id)
        try:
            record = mapping.pull_request(
                repository,
                pr,
                merged_at=_event_time(events, "merged"),
                closed_at=_event_time(events, "closed"),
            )
        except MAPPING_ERRORS as exc:
            page.failures.append(RecordFailure("pull_requests", pr_id, str(exc)))
            return
        page.records.extend(_users(mapping.pull_request_users(pr)))
        page.records.append(record)
        page.versions[("pull_requests", record.key)] = (
            mapping.version_of(pr, "updated_on") or ""
        )
        self._add_approval_changes(repository, pr, pr_id, events, page)
        keys: set[str] = set()
        for raw in commits:
            try:
                commit = mapping.commit(repository, pr_id, raw)
            except MAPPING_ERRORS as exc:
                page.failures.append(
                    RecordFailure(
                        "pull_request_commits", str(raw.get("hash")), str(exc)
                    )
                )
                continue
            page.records.extend(
                _users([mapping.as_dict(raw.get("author")).get("user")])
            )
            page.records.append(commit)
            keys.add(commit.key)
        page.children.append(ChildSet("pull_request_commits", pr_id, frozenset(keys)))

    def _add_approval_changes(
        self,
        repository: RepositoryRef,
        pr: dict[str, Any],
        pr_id: str,
        events: dict[str, dict[str, Any]],
        page: Page,
    ) -> None:
        """Add approvals the activity log did not show, and withdrawn approvals.

        Bitbucket drops a withdrawn approval from the activity log, so withdrawal is
        seen only as a participant no longer approving: the approval record is
        deleted and an ``unapproved`` event, whose time Bitbucket does not give,
        is sent.
        """
        approvers = {
            mapping.approval_key(pr_id, p.get("user")): p
            for p in mapping.as_list(pr.get("participants"))
            if isinstance(p, dict) and p.get("approved") is True
        }
        stored = {key for key in events if key.startswith("approval:")}
        for key, participant in approvers.items():
            if key in stored:
                continue
            try:
                record = mapping.event(
                    repository,
                    pr_id,
                    key=key,
                    kind="approved",
                    actor=participant.get("user"),
                    created_at=participant.get("participated_on"),
                )
            except MAPPING_ERRORS as exc:
                page.failures.append(
                    RecordFailure("pull_request_events", key, str(exc))
                )
                continue
            page.records.append(record)
        for key in stored - set(approvers):
            page.records.append(
                mapping.unapproval_event(
                    repository, pr_id, events[key].get("actor_id"), pr.get("updated_on")
                )
            )
        if stored or approvers:
            page.children.append(
                ChildSet(
                    "pull_request_events",
                    pr_id,
                    frozenset(approvers),
                    key_prefix="approval:",
                )
            )

    def _fetch_pipelines(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        """Read pipelines newest first, down to the oldest one still running.

        Bitbucket cannot filter pipelines by update time, so the bookmark is the
        creation time from which pipelines may still change: the oldest unfinished
        one seen, at most three days back, else the newest.
        """
        floor = state.bookmark("pipelines") or self._initial_since()
        url = f"{self._repository_url(repository)}/pipelines/"
        params = {"sort": "-created_on", "pagelen": LIST_PAGE}
        newest: str | None = None
        oldest_open: str | None = None
        for raw_page in paginate(self.client, url, params):
            page = Page("pipelines", items=len(raw_page))
            keep = [
                p
                for p in raw_page
                if not floor or (mapping.version_of(p, "created_on") or "9") >= floor
            ]
            for raw in keep:
                created = mapping.version_of(raw, "created_on")
                newest = max(newest or "", created or "") or None
                if created and not mapping.is_finished(raw):
                    oldest_open = min(oldest_open or created, created)
            self._map_unless_stored(
                page,
                keep,
                "pipeline:",
                "completed_on",
                lambda r: mapping.pipeline(repository, r),
                state,
            )
            yield page
            if len(keep) < len(raw_page):
                break
        yield Page(
            "pipelines",
            bookmark=_pipeline_bookmark(newest, oldest_open)
            or state.bookmark("pipelines"),
        )

    def _fetch_deployments(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        # NOTE: Bitbucket documents no update-time filter or sort for deployments,
        # so every run lists them all; unchanged ones are skipped by their
        # last_update_time, which costs one request per 100 deployments.
        url = f"{self._repository_url(repository)}/deployments/"
        for raw_page in paginate(self.client, url, {"pagelen": LIST_PAGE}):
            page = Page("deployments", items=len(raw_page))
            self._map_unless_stored(
                page,
                raw_page,
                "deployment:",
                "last_update_time",
                lambda r: mapping.deployment(repository, r),
                state,
            )
            yield page

    @staticmethod
    def _map_unless_stored(
        page: Page,
        raws: list[dict[str, Any]],
        prefix: str,
        version_field: str,
        build: Callable[[dict[str, Any]], Record],
        state: StateView,
    ) -> None:
        keys = [f"{prefix}{raw.get('uuid')}" for raw in raws]
        stored = state.versions("deployments", keys)
        for raw, key in zip(raws, keys, strict=True):
            version = mapping.version_of(raw, version_field) or mapping.version_of(
                raw, "created_on"
            )
            if key in stored and stored[key] == (version or ""):
                continue
            try:
                record = build(raw)
            except MAPPING_ERRORS as exc:
                page.failures.append(
                    RecordFailure("deployments", str(raw.get("uuid")), str(exc))
                )
                continue
            page.records.append(record)
            page.versions[("deployments", record.key)] = version or ""


def _users(people: list[Any]) -> list[Record]:
    users: dict[str, Record] = {}
    for raw in people:
        try:
            record = mapping.user(raw)
        except MAPPING_ERRORS:
            continue
        if record is not None:
            users[record.key] = record
    return list(users.values())


def _lacks_close_time(record: Record) -> bool:
    """Return whether a merged or closed pull request record has no time for it."""
    payload = record.payload
    return (payload["state"] == "merged" and payload["merged_at"] is None) or (
        payload["state"] == "closed" and payload["closed_at"] is None
    )


def _event_time(events: dict[str, dict[str, Any]], kind: str) -> str | None:
    times = [e.get("created_at") for e in events.values() if e.get("type") == kind]
    return max((t for t in times if t), default=None)


def _pipeline_bookmark(newest: str | None, oldest_open: str | None) -> str | None:
    if newest is None:
        return None
    if oldest_open is None:
        return newest
    limit = utc_timestamp(
        (
            datetime.fromisoformat(newest.replace("Z", "+00:00")) - OPEN_PIPELINE_WINDOW
        ).isoformat()
    )
    return max(oldest_open, limit or oldest_open)
