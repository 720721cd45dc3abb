"""GitLab (gitlab.com and self-managed, API v4): resolve projects and fetch them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from agent.config.settings import GitLabSettings
from agent.errors import AuthError, NotFoundError, ProviderError
from agent.processing.records import Record
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
from agent.providers.gitlab import mapping
from agent.providers.gitlab.pagination import paginate
from agent.providers.http import HostClient, HttpSettings

log = logging.getLogger(__name__)

STREAMS = ("repository", "merge_requests", "pipelines", "deployments")


@dataclass
class _MergeRequestDetails:
    """Sub-resources of one merge request; None where GitLab returned 404."""

    commits: list[dict[str, Any]] | None
    notes: list[dict[str, Any]] | None
    approvers: list[dict[str, Any]] | None


class GitLabProvider(Provider):
    name = "gitlab"
    streams = STREAMS

    def __init__(
        self,
        settings: GitLabSettings,
        http: HttpSettings,
        *,
        initial_days: int,
        stop: threading.Event | None = None,
    ) -> None:
        if not settings.access_token:
            raise ProviderError(
                "GitLab repositories are configured but no access token is set; set "
                "GITLAB_ACCESS_TOKEN or the SSM parameter gitlab/access_token"
            )
        self.settings = settings
        self.api_url = f"{settings.domain_url}/api/v4"
        self.client = HostClient(
            "gitlab",
            self.api_url,
            {"PRIVATE-TOKEN": settings.access_token},
            http,
            verify=settings.ca_bundle or True,
            stop=stop,
        )
        self._initial_days = initial_days
        self._pool = ThreadPoolExecutor(
            max_workers=http.max_concurrency, thread_name_prefix="gitlab"
        )
        # None until the first approvals request shows whether the instance has them.
        self._approvals_available: bool | None = None

    @property
    def request_count(self) -> int:
        return self.client.request_count

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.session.close()

    # Checks for ``mhq-agent check``

    def check(self) -> list[CheckResult]:
        """Check the token's scopes, then resolve every configured repository."""
        token = self._check_token()
        if not token.ok:
            return [token]
        results = [token]
        for entry in self.resolve():
            if isinstance(entry, ResolveFailure):
                results.append(
                    CheckResult(
                        f"gitlab repository {entry.entry}", False, str(entry.error)
                    )
                )
            else:
                results.append(
                    CheckResult(
                        f"gitlab repository {entry.key}",
                        True,
                        f"readable (project id {entry.api_id})",
                    )
                )
        return results

    def _check_token(self) -> CheckResult:
        """Read the token's scopes, or fall back to /user where GitLab cannot show them.

        /personal_access_tokens/self returns the scopes of personal, group and
        project access tokens. Older instances and other kinds of token get 404 or
        403 there (the GitLab version that added it is not checked here).
        """
        name = "gitlab token"
        try:
            token = self.client.get_json(f"{self.api_url}/personal_access_tokens/self")
        except AuthError as exc:
            if exc.status == 401:
                return CheckResult(name, False, str(exc))
            token = None
        except NotFoundError:
            token = None
        except ProviderError as exc:
            return CheckResult(name, False, str(exc))
        data = token.data if token is not None else None
        if isinstance(data, dict) and isinstance(data.get("scopes"), list):
            return _token_scopes_result(name, data)
        try:
            user = self.client.get_json(f"{self.api_url}/user").data
        except ProviderError as exc:
            return CheckResult(name, False, str(exc))
        username = user.get("username") if isinstance(user, dict) else None
        return CheckResult(
            name,
            True,
            f"accepted for user {username}; this GitLab does not show token scopes, "
            "so the repository checks below stand in for the read_api check",
        )

    # Resolving configured entries

    def resolve(self) -> Iterator[RepositoryRef | ResolveFailure]:
        seen: set[str] = set()
        for entry in self.settings.repositories:
            try:
                projects = self._projects_for(entry)
                for project in projects:
                    ref = self._ref(project)
                    if ref.api_id not in seen:
                        seen.add(ref.api_id)
                        yield ref
            except ProviderError as exc:
                yield ResolveFailure(entry, exc)
            except (KeyError, TypeError, AttributeError) as exc:
                problem = ProviderError(
                    f"gitlab returned a project without {exc} for {entry!r}",
                    code="invalid_data",
                )
                yield ResolveFailure(entry, problem)

    def _projects_for(self, entry: str) -> Iterator[dict[str, Any]]:
        path = self._path_of(entry)
        encoded = quote(path, safe="")
        try:
            yield self.client.get_json(f"{self.api_url}/projects/{encoded}").data
            return
        except NotFoundError:
            if path.isdigit():
                raise
        try:
            group = self.client.get_json(f"{self.api_url}/groups/{encoded}").data
        except NotFoundError as exc:
            raise NotFoundError(
                f"{entry!r} is neither a project nor a group this token can see on "
                f"{self.settings.domain_url}",
                status=404,
                code="not_found",
            ) from exc
        url = f"{self.api_url}/groups/{group['id']}/projects"
        for page in paginate(self.client, url, {"include_subgroups": "true"}):
            yield from page

    def _path_of(self, entry: str) -> str:
        """Turn a project/group URL or numeric id into the path GitLab's API takes."""
        text = entry.strip()
        if text.isdigit():
            return text
        base = urlsplit(self.settings.domain_url)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or parts.netloc != base.netloc:
            raise ProviderError(
                f"repository {entry!r} is not on the configured GitLab "
                f"{self.settings.domain_url}; give a URL on that host or a project id",
                code="invalid_repository",
            )
        path = parts.path
        prefix = base.path.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        path = path.split("/-/", 1)[0].strip("/").removesuffix(".git")
        if not path:
            raise ProviderError(
                f"repository URL {entry!r} has no project or group path",
                code="invalid_repository",
            )
        return path

    def _ref(self, project: dict[str, Any]) -> RepositoryRef:
        # Host and port only: the key is sent to MHQ and must never carry userinfo.
        base = urlsplit(self.settings.domain_url)
        host = f"{base.hostname}:{base.port}" if base.port else str(base.hostname)
        return RepositoryRef(
            provider=self.name,
            key=f"{host}/{project['path_with_namespace']}",
            api_id=str(project["id"]),
            web_url=project.get("web_url"),
            metadata=project,
        )

    # Fetching

    def fetch(
        self, repository: RepositoryRef, stream: str, state: StateView
    ) -> Iterator[Page]:
        fetchers: dict[str, Callable[[RepositoryRef, StateView], Iterator[Page]]] = {
            "repository": self._fetch_repository,
            "merge_requests": self._fetch_merge_requests,
            "pipelines": self._fetch_pipelines,
            "deployments": self._fetch_deployments,
        }
        return fetchers[stream](repository, state)

    def _project_url(self, repository: RepositoryRef) -> str:
        return f"{self.api_url}/projects/{repository.api_id}"

    def _since(self, state: StateView, stream: str) -> str | None:
        bookmark = state.bookmark(stream)
        if bookmark:
            return bookmark
        if self._initial_days <= 0:
            return None
        start = datetime.now(UTC) - timedelta(days=self._initial_days)
        return start.isoformat(timespec="seconds").replace("+00:00", "Z")

    def _fetch_repository(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        project = (
            repository.metadata
            or self.client.get_json(self._project_url(repository)).data
        )
        yield Page("repository", [mapping.repository(repository, project)], items=1)

    def _fetch_merge_requests(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        params = {
            "state": "all",
            "scope": "all",
            "order_by": "updated_at",
            "sort": "asc",
        }
        since = self._since(state, "merge_requests")
        if since:
            params["updated_after"] = since
        url = f"{self._project_url(repository)}/merge_requests"
        for raw_page in paginate(self.client, url, params):
            yield self._merge_request_page(repository, raw_page, state)

    def _merge_request_page(
        self,
        repository: RepositoryRef,
        raw_page: list[dict[str, Any]],
        state: StateView,
    ) -> Page:
        page = Page("merge_requests", items=len(raw_page))
        stored = state.versions("pull_requests", [str(mr.get("id")) for mr in raw_page])
        changed = [
            mr
            for mr in raw_page
            if stored.get(str(mr.get("id"))) != mapping.version_of(mr)
        ]
        details = self._details_for(repository, changed)
        for mr in raw_page:
            if mr in changed:
                self._add_merge_request(
                    repository, mr, details[str(mr.get("id"))], page
                )
        page.bookmark = _max_version(raw_page) or state.bookmark("merge_requests")
        return page

    def _details_for(
        self, repository: RepositoryRef, merge_requests: Sequence[dict[str, Any]]
    ) -> dict[str, _MergeRequestDetails]:
        base = f"{self._project_url(repository)}/merge_requests"
        futures: dict[str, tuple[Future[Any], Future[Any], Future[Any]]] = {}
        for mr in merge_requests:
            mr_url = f"{base}/{mr.get('iid')}"
            futures[str(mr.get("id"))] = (
                self._pool.submit(self._list_all, f"{mr_url}/commits", {}),
                self._pool.submit(
                    self._list_all,
                    f"{mr_url}/notes",
                    {"sort": "asc", "order_by": "created_at"},
                ),
                self._pool.submit(self._approvers, f"{mr_url}/approvals"),
            )
        return {
            mr_id: _MergeRequestDetails(
                _unless_missing(c), _unless_missing(n), a.result()
            )
            for mr_id, (c, n, a) in futures.items()
        }

    def _list_all(self, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in paginate(self.client, url, params):
            items.extend(page)
        return items

    def _approvers(self, url: str) -> list[dict[str, Any]] | None:
        """Return ``approved_by``, or None where the instance has no approvals API."""
        if self._approvals_available is False:
            return None
        try:
            data = self.client.get_json(url).data
        except (NotFoundError, AuthError) as exc:
            # Approvals are optional on GitLab Free; approval notes still give events.
            if self._approvals_available is None:
                log.info(
                    "gitlab approvals api unavailable, using approval notes only",
                    extra={"status": exc.status},
                )
            self._approvals_available = False
            return None
        self._approvals_available = True
        approved = data.get("approved_by") if isinstance(data, dict) else None
        return approved if isinstance(approved, list) else []

    def _add_merge_request(
        self,
        repository: RepositoryRef,
        mr: dict[str, Any],
        details: _MergeRequestDetails,
        page: Page,
    ) -> None:
        mr_id = str(mr.get("id"))
        try:
            record = mapping.merge_request(repository, mr)
        except (ValueError, TypeError, AttributeError) as exc:
            page.failures.append(RecordFailure("pull_requests", mr_id, str(exc)))
            return
        people = list(mapping.merge_request_users(mr))
        children: dict[str, set[str]] = {
            "pull_request_commits": set(),
            "pull_request_events": set(),
        }
        records: list[Record] = []
        for name, listed in (("commits", details.commits), ("notes", details.notes)):
            if listed is None:
                # Stored children stay as they are: a 404 proves nothing was deleted.
                page.failures.append(
                    RecordFailure(
                        "pull_requests", mr_id, f"GitLab returned 404 for its {name}"
                    )
                )
        for raw in details.commits or []:
            self._map_child(
                page,
                records,
                children,
                "pull_request_commits",
                raw,
                lambda r: mapping.commit(repository, mr_id, r),
            )
        approvers_noted = set()
        for note in details.notes or []:
            people.append(note.get("author"))
            event = self._map_child(
                page,
                records,
                children,
                "pull_request_events",
                note,
                lambda r: mapping.note_event(repository, mr_id, r),
            )
            if event is not None and event.payload["type"] == "approved":
                approvers_noted.add(event.payload["actor_id"])
        for approver in details.approvers or []:
            if mapping.user_id(approver.get("user")) in approvers_noted:
                continue
            people.append(approver.get("user"))
            self._map_child(
                page,
                records,
                children,
                "pull_request_events",
                approver,
                lambda r: mapping.approval_event(repository, mr_id, r),
            )
        page.records.extend(self._users(people, page))
        page.records.append(record)
        page.records.extend(records)
        page.versions[("pull_requests", record.key)] = mapping.version_of(mr) or ""
        complete = {
            "pull_request_commits": details.commits is not None,
            "pull_request_events": details.notes is not None,
        }
        for entity, keys in children.items():
            if complete[entity]:
                page.children.append(ChildSet(entity, mr_id, frozenset(keys)))

    @staticmethod
    def _map_child(
        page: Page,
        records: list[Record],
        children: dict[str, set[str]],
        entity: str,
        raw: dict[str, Any],
        build: Callable[[dict[str, Any]], Record | None],
    ) -> Record | None:
        try:
            record = build(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            page.failures.append(RecordFailure(entity, str(raw_id), str(exc)))
            return None
        if record is not None:
            records.append(record)
            children[entity].add(record.key)
        return record

    @staticmethod
    def _users(people: Sequence[Any], page: Page) -> list[Record]:
        users: dict[str, Record] = {}
        for raw in people:
            try:
                record = mapping.user(raw)
            except (ValueError, TypeError, AttributeError) as exc:
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                page.failures.append(RecordFailure("users", str(raw_id), str(exc)))
                continue
            if record is not None:
                users[record.key] = record
        return list(users.values())

    def _fetch_pipelines(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        params = {"order_by": "updated_at", "sort": "asc"}
        since = self._since(state, "pipelines")
        if since:
            params["updated_after"] = since
        url = f"{self._project_url(repository)}/pipelines"
        for raw_page in paginate(self.client, url, params):
            yield self._pipeline_page(repository, url, raw_page, state)

    def _pipeline_page(
        self,
        repository: RepositoryRef,
        url: str,
        raw_page: list[dict[str, Any]],
        state: StateView,
    ) -> Page:
        page = Page("pipelines", items=len(raw_page))
        keys = [f"pipeline:{p.get('id')}" for p in raw_page]
        stored = state.versions("deployments", keys)
        changed = [
            p
            for p, k in zip(raw_page, keys, strict=True)
            if stored.get(k) != mapping.version_of(p)
        ]
        # The list omits started_at and finished_at: changed pipelines are read whole.
        details = list(self._pool.map(lambda p: self._pipeline_detail(url, p), changed))
        for raw in details:
            self._map_top(
                page, "deployments", raw, lambda r: mapping.pipeline(repository, r)
            )
        page.bookmark = _max_version(raw_page) or state.bookmark("pipelines")
        return page

    def _pipeline_detail(self, url: str, pipeline: dict[str, Any]) -> dict[str, Any]:
        try:
            detail = self.client.get_json(f"{url}/{pipeline.get('id')}").data
        except NotFoundError:
            return pipeline
        return detail if isinstance(detail, dict) else pipeline

    def _fetch_deployments(
        self, repository: RepositoryRef, state: StateView
    ) -> Iterator[Page]:
        params = {"order_by": "updated_at", "sort": "asc"}
        since = self._since(state, "deployments")
        if since:
            params["updated_after"] = since
        url = f"{self._project_url(repository)}/deployments"
        for raw_page in paginate(self.client, url, params):
            page = Page("deployments", items=len(raw_page))
            keys = [f"deployment:{d.get('id')}" for d in raw_page]
            stored = state.versions("deployments", keys)
            for raw, key in zip(raw_page, keys, strict=True):
                if stored.get(key) != mapping.version_of(raw):
                    self._map_top(
                        page,
                        "deployments",
                        raw,
                        lambda r: mapping.deployment(repository, r),
                    )
            page.bookmark = _max_version(raw_page) or state.bookmark("deployments")
            yield page

    @staticmethod
    def _map_top(
        page: Page,
        entity: str,
        raw: dict[str, Any],
        build: Callable[[dict[str, Any]], Record],
    ) -> None:
        try:
            record = build(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            page.failures.append(RecordFailure(entity, str(raw.get("id")), str(exc)))
            return
        page.records.append(record)
        page.versions[(entity, record.key)] = mapping.version_of(raw) or ""


def _token_scopes_result(name: str, token: dict[str, Any]) -> CheckResult:
    scopes = sorted(str(scope) for scope in token["scopes"])
    shown = ", ".join(scopes) or "none"
    if token.get("revoked") is True or token.get("active") is False:
        return CheckResult(name, False, "the token is revoked or expired; create one")
    if not {"read_api", "api"} & set(scopes):
        return CheckResult(
            name,
            False,
            f"scopes {shown} do not include read_api (or api); create a token "
            "with the read_api scope",
        )
    expires = token.get("expires_at")
    return CheckResult(name, True, f"scopes {shown}; expires {expires or 'never'}")


def _max_version(raw_page: list[dict[str, Any]]) -> str | None:
    versions = [v for v in map(mapping.version_of, raw_page) if v]
    return max(versions) if versions else None


def _unless_missing(future: Future[Any]) -> Any:
    """Return a sub-resource list, or None when GitLab returned 404 for it."""
    try:
        return future.result()
    except NotFoundError:
        return None
