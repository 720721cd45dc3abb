"""A fake GitLab REST API v4 on 127.0.0.1, serving the recorded fixtures.

It paginates, filters, sorts and fails like gitlab.com does, so the agent can be tested
against pagination edge cases, revoked tokens, path prefixes, private CAs and network
faults. Run `python -m tests.fakes.gitlab --port 0` to try it by hand.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import http
import itertools
import logging
import math
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from tests.fakes.gitlab_data import (
    DEFAULT_FIXTURES_DIR,
    SNOWFLAKE_SPEND,
    Group,
    Project,
    Record,
    effective_time,
    format_time,
    list_view_of_pipeline,
    load_dataset,
    parse_time,
    project_path_from_web_url,
)
from tests.fakes.httpserver import (
    JSONRequestHandler,
    LoopbackServer,
    Reply,
    ServerThread,
    install_stop_handlers,
)
from tests.fakes.tls import make_ca_and_server_cert

Approvals = Literal["absent", "from_notes"]
FaultMode = Literal["reset", "truncate", "html"]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "glpat-test-token"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

FAKE_USER: Record = {
    "id": 90000099,
    "username": "mhq-agent-bot",
    "name": "MHQ Agent Bot",
    "state": "active",
    "avatar_url": None,
}

# GitLab's DeploymentsFinder rejects an updated_at filter without updated_at sort
# with this 400 message.
_DEPLOYMENT_FILTER_ERROR = (
    "400 Bad request - `updated_at` filter requires `updated_at` sort"
)

_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in - GitLab</title></head>"
    b"<body><h1>GitLab is not responding</h1></body></html>"
)


class ApiError(Exception):
    """An error reply, raised from deep inside a route."""

    def __init__(self, status: int, payload: Record) -> None:
        super().__init__(status, payload)
        self.reply = Reply.json(status, payload)


@dataclass
class Fault:
    """A scripted failure for requests whose path matches `pattern`."""

    pattern: re.Pattern[str]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    times: int | None = 1
    delay_s: float = 0.0
    mode: FaultMode | None = None
    query: dict[str, str] = field(default_factory=dict)

    def matches(self, path: str, query: Mapping[str, str]) -> bool:
        if self.pattern.search(path) is None:
            return False
        return all(query.get(name) == value for name, value in self.query.items())


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received. path has no prefix and no query string."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    time: float
    auth: str | None
    fault: str | None = None


@dataclass
class _RequestContext:
    """What a route needs besides its path parameters."""

    query: dict[str, str]
    raw_query: str
    link_base: str


class FakeGitLab:
    """GitLab REST API v4 on 127.0.0.1, backed by the recorded fixtures."""

    def __init__(
        self,
        fixtures_dir: Path = DEFAULT_FIXTURES_DIR,
        token: str = DEFAULT_TOKEN,
        prefix: str = "",
        tls: tuple[str | Path, str | Path] | None = None,
        latency_s: float = 0.0,
        approvals: Approvals = "absent",
        totals_limit: int = 10000,
        rate_limit: int | None = None,
        token_scopes: tuple[str, ...] = ("read_api",),
        port: int = 0,
    ) -> None:
        self.token = token
        self.token_scopes = token_scopes
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.latency_s = latency_s
        self.approvals = approvals
        self.totals_limit = totals_limit
        self.rate_limit = rate_limit

        dataset = load_dataset(Path(fixtures_dir))
        self._projects = dataset.projects
        self._groups = dataset.groups
        self._redirects: dict[str, int] = {}

        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._stopping = threading.Event()
        self._rate_window_ends = 0.0
        self._rate_remaining = 0
        self._ids = itertools.count(int(time.time()))

        self._scheme = "https" if tls else "http"
        ssl_context = _server_ssl_context(tls) if tls else None
        self._server = ServerThread(_GitLabHandler, ssl_context, self._attach, port)

    # -- lifecycle -------------------------------------------------------------------

    def _attach(self, server: LoopbackServer) -> None:
        server.app = self  # type: ignore[attr-defined]

    def start(self) -> FakeGitLab:
        self._stopping.clear()
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()

    def __enter__(self) -> FakeGitLab:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL to configure the agent with (GITLAB_DOMAIN_URL)."""
        return f"{self._scheme}://127.0.0.1:{self.port}{self.prefix}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v4"

    def project_url(self, path: str) -> str:
        """Return the web URL of a project on this fake, as listed in repositories."""
        return f"{self.url}/{path}"

    def set_token(self, new_token: str) -> None:
        """Replace the accepted token, so requests with the old one get 401."""
        with self._lock:
            self.token = new_token

    # -- faults and request log ------------------------------------------------------

    def add_fault(
        self,
        path_regex: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        times: int | None = 1,
        delay_s: float = 0.0,
        mode: FaultMode | None = None,
        query: Mapping[str, str] | None = None,
    ) -> None:
        """Script a failure for the next `times` requests (None: every one) whose path,
        without prefix and query string, matches path_regex and whose query contains
        `query`. Faults are consumed in the order they were added.

        mode "reset" closes the connection without a response, "truncate" sends the
        normal response with its full Content-Length but only half the body, "html"
        returns 200 with an HTML page. Without mode, `status` sends that status with
        `body` (JSON unless str or bytes) and `headers`. A fault with only delay_s
        delays the normal response.
        """
        fault = Fault(
            re.compile(path_regex),
            status=status,
            headers=dict(headers or {}),
            body=body,
            times=times,
            delay_s=delay_s,
            mode=mode,
            query=dict(query or {}),
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str, query: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.matches(path, query):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def requests(self, pattern: str | None = None) -> list[LoggedRequest]:
        """Return logged requests whose path (no prefix, no query) matches pattern."""
        with self._lock:
            entries = list(self._log)
        if pattern is None:
            return entries
        regex = re.compile(pattern)
        return [entry for entry in entries if regex.search(entry.path)]

    def request_count(self, pattern: str | None = None) -> int:
        return len(self.requests(pattern))

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- data access for tests -------------------------------------------------------

    def project(self, path_or_id: str | int) -> Project:
        """Return the live project object, not a copy. Raise KeyError if unknown."""
        with self._lock:
            project = self._find_project(str(path_or_id))
        if project is None:
            raise KeyError(f"no project {path_or_id!r} on the fake GitLab")
        return project

    def _find_project(self, key: str) -> Project | None:
        if key.isdigit():
            return self._projects.get(int(key))
        for project in self._projects.values():
            if project.path_with_namespace == key:
                return project
        redirected = self._redirects.get(key)
        return self._projects.get(redirected) if redirected is not None else None

    def _find_group(self, key: str) -> Group | None:
        if key.isdigit():
            return next((g for g in self._groups.values() if g.id == int(key)), None)
        return self._groups.get(key)

    def _now(self) -> str:
        return format_time(datetime.now(UTC))

    def _next_id(self) -> int:
        return next(self._ids)

    # -- mutation helpers ------------------------------------------------------------

    def update_merge_request(
        self,
        iid: int,
        *,
        project: str = SNOWFLAKE_SPEND,
        updated_at: str | datetime | None = None,
        **fields: Any,
    ) -> Record:
        """Change fields of a merge request and bump its updated_at (default: now)."""
        with self._lock:
            record = self.project(project).merge_requests[iid]
            record.update(fields)
            record["updated_at"] = _timestamp(updated_at) or self._now()
            return copy.deepcopy(record)

    def add_merge_request(
        self, record: Record, *, project: str | None = None
    ) -> Record:
        """Add a merge request, filling in missing ids and timestamps."""
        with self._lock:
            target = self.project(
                project or _project_of_record(record, SNOWFLAKE_SPEND)
            )
            now = self._now()
            stored = copy.deepcopy(record)
            stored.setdefault("id", self._next_id())
            stored.setdefault("iid", max(target.merge_requests, default=0) + 1)
            for key in ("project_id", "source_project_id", "target_project_id"):
                stored.setdefault(key, target.id)
            stored.setdefault("created_at", now)
            stored.setdefault("updated_at", stored["created_at"])
            stored.setdefault("state", "opened")
            stored.setdefault(
                "web_url",
                f"{self.project_url(target.path_with_namespace)}/-/merge_requests/{stored['iid']}",
            )
            target.merge_requests[stored["iid"]] = stored
            return copy.deepcopy(stored)

    def add_note(
        self, iid: int, note: Record, *, project: str = SNOWFLAKE_SPEND
    ) -> Record:
        """Add a note to a merge request. Like GitLab, this also bumps the merge
        request's updated_at to the note's time."""
        with self._lock:
            target = self.project(project)
            merge_request = target.merge_requests[iid]
            now = self._now()
            stored: Record = {
                "id": self._next_id(),
                "type": None,
                "body": "",
                "attachment": None,
                "author": dict(FAKE_USER),
                "created_at": now,
                "updated_at": now,
                "system": False,
                "noteable_id": merge_request["id"],
                "noteable_type": "MergeRequest",
                "resolvable": False,
                "confidential": False,
                "internal": False,
                "noteable_iid": iid,
                "commands_changes": {},
            }
            stored.update(copy.deepcopy(note))
            target.notes.setdefault(iid, []).append(stored)
            merge_request["updated_at"] = stored["updated_at"]
            return copy.deepcopy(stored)

    def delete_note(
        self, iid: int, note_id: int, *, project: str = SNOWFLAKE_SPEND
    ) -> None:
        """Delete a note and bump the merge request's updated_at to now."""
        with self._lock:
            target = self.project(project)
            notes = target.notes.get(iid, [])
            remaining = [note for note in notes if note["id"] != note_id]
            if len(remaining) == len(notes):
                raise KeyError(f"merge request !{iid} has no note {note_id}")
            target.notes[iid] = remaining
            target.merge_requests[iid]["updated_at"] = self._now()

    def add_pipeline(self, project_path: str, record: Record) -> Record:
        """Add a pipeline. The list endpoint shows only GitLab's list fields of it."""
        with self._lock:
            target = self.project(project_path)
            now = self._now()
            stored = copy.deepcopy(record)
            stored.setdefault("id", self._next_id())
            stored.setdefault(
                "iid", max((p["iid"] for p in target.pipelines.values()), default=0) + 1
            )
            stored["project_id"] = target.id
            stored.setdefault("created_at", now)
            stored.setdefault("updated_at", stored["created_at"])
            stored.setdefault(
                "web_url",
                f"{self.project_url(target.path_with_namespace)}/-/pipelines/{stored['id']}",
            )
            target.pipeline_details[stored["id"]] = stored
            target.pipelines[stored["id"]] = list_view_of_pipeline(stored)
            return copy.deepcopy(stored)

    def add_deployment(self, project_path: str, record: Record) -> Record:
        """Add a deployment, filling in missing ids and timestamps."""
        with self._lock:
            target = self.project(project_path)
            now = self._now()
            stored = copy.deepcopy(record)
            stored.setdefault("id", self._next_id())
            stored.setdefault(
                "iid",
                max((d["iid"] for d in target.deployments.values()), default=0) + 1,
            )
            stored.setdefault("created_at", now)
            stored.setdefault("updated_at", stored["created_at"])
            target.deployments[stored["id"]] = stored
            return copy.deepcopy(stored)

    def delete_project(self, path: str) -> None:
        """Remove a project, so every request for it gets 404."""
        with self._lock:
            project = self.project(path)
            del self._projects[project.id]
            self._redirects = {
                old: pid for old, pid in self._redirects.items() if pid != project.id
            }

    def move_project(
        self, old_path: str, new_path: str, *, keep_redirect: bool = True
    ) -> None:
        """Rename or transfer a project, creating missing groups on the way.

        By default the old path keeps resolving to the project, as GitLab's redirect
        routes do. Pass keep_redirect=False to make the old path 404 instead.
        """
        with self._lock:
            project = self.project(old_path)
            project.path_with_namespace = new_path
            self._ensure_groups(project.namespace_path)
            if keep_redirect:
                self._redirects[old_path] = project.id

    def _ensure_groups(self, full_path: str) -> None:
        parts = full_path.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self._groups:
                self._groups[path] = Group(self._next_id(), path, self._now())

    # -- request handling ------------------------------------------------------------

    def _serve(self, handler: _GitLabHandler) -> None:
        """Handle one request: prefix, latency, faults, rate limit, auth, route."""
        started = time.time()
        split = urlsplit(handler.path)
        has_prefix = split.path.startswith(self.prefix)
        path = split.path[len(self.prefix) :] if has_prefix else None
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        log_path = path if path is not None else split.path

        fault = self._wait_and_take_fault(log_path, query)
        reply: Reply | None = None
        if fault is None or fault.mode != "reset":
            reply = self._fault_reply(fault) if fault is not None else None
            if reply is None:
                reply = self._normal_reply(
                    handler, split.path, path, split.query, query
                )
            reply.headers.setdefault("X-Request-Id", uuid.uuid4().hex)

        # Log before sending, so a test that has the response also sees the entry.
        status = reply.status if reply is not None else None
        auth = _auth_kind(handler)
        self._record(
            LoggedRequest(
                handler.command,
                log_path,
                query,
                status,
                started,
                auth,
                _fault_name(fault),
            )
        )

        if reply is None:
            handler.reset_connection()
        else:
            truncate = fault is not None and fault.mode == "truncate"
            handler.send_reply(reply, truncate=truncate)

    def _wait_and_take_fault(self, path: str, query: Mapping[str, str]) -> Fault | None:
        """Apply the latency, take the matching fault and apply its delay."""
        if self.latency_s:
            self._stopping.wait(self.latency_s)
        fault = self._take_fault(path, query)
        if fault is not None and fault.delay_s:
            self._stopping.wait(fault.delay_s)
        return fault

    def _fault_reply(self, fault: Fault) -> Reply | None:
        """Return the scripted reply, or None when the normal reply is to be sent."""
        if fault.mode == "html":
            html_type = {"Content-Type": "text/html; charset=utf-8"}
            return Reply(200, _HTML_PAGE, html_type)
        if fault.mode == "truncate" or fault.status is None:
            return None

        if isinstance(fault.body, bytes | str):
            body = fault.body.encode() if isinstance(fault.body, str) else fault.body
            headers = {"Content-Type": "text/plain; charset=utf-8", **fault.headers}
            return Reply(fault.status, body, headers)

        payload = fault.body
        if payload is None:
            payload = {"message": _status_message(fault.status)}
        return Reply.json(fault.status, payload, fault.headers)

    def _normal_reply(
        self,
        handler: _GitLabHandler,
        raw_path: str,
        path: str | None,
        raw_query: str,
        query: dict[str, str],
    ) -> Reply:
        if handler.command not in ("GET", "HEAD"):
            return Reply.json(405, {"error": "405 Method Not Allowed"})
        if path is None or not path.startswith("/api/v4/"):
            return Reply.json(404, {"error": "404 Not Found"})

        rate_headers, exhausted = self._count_rate_limit()
        if exhausted:
            reply = Reply.json(429, {"message": "429 Too Many Requests"})
        elif not self._authorized(handler):
            reply = Reply.json(401, {"message": "401 Unauthorized"})
        else:
            host = handler.headers.get("Host") or f"127.0.0.1:{self.port}"
            link_base = f"{self._scheme}://{host}{raw_path}"
            context = _RequestContext(query, raw_query, link_base)
            reply = self._route(path[len("/api/v4") :], context)

        reply.headers.update(rate_headers)
        return reply

    def _authorized(self, handler: _GitLabHandler) -> bool:
        presented = handler.headers.get("PRIVATE-TOKEN")
        authorization = handler.headers.get("Authorization", "")
        if presented is None and authorization.lower().startswith("bearer "):
            presented = authorization[len("bearer ") :].strip()
        if not presented:
            return False

        with self._lock:
            expected = self.token
        return hmac.compare_digest(presented.encode(), expected.encode())

    def _count_rate_limit(self) -> tuple[dict[str, str], bool]:
        """Count one request against a 60-second window of rate_limit requests.

        Returns the RateLimit headers and whether the window's budget is spent.
        """
        if self.rate_limit is None:
            return {}, False

        with self._lock:
            now = time.time()
            if now >= self._rate_window_ends:
                self._rate_window_ends = now + 60
                self._rate_remaining = self.rate_limit
            self._rate_remaining -= 1
            remaining = self._rate_remaining
            reset = math.ceil(self._rate_window_ends)

        headers = {
            "RateLimit-Limit": str(self.rate_limit),
            "RateLimit-Remaining": str(max(remaining, 0)),
            "RateLimit-Reset": str(reset),
        }
        exhausted = remaining < 0
        if exhausted:
            headers["Retry-After"] = str(max(1, reset - int(now)))
        return headers, exhausted

    def _route(self, api_path: str, context: _RequestContext) -> Reply:
        for pattern, method_name in _ROUTES:
            match = pattern.match(api_path)
            if match is None:
                continue
            route = cast(Callable[..., Any], getattr(self, method_name))
            try:
                with self._lock:
                    result = route(context, **match.groupdict())
                    if isinstance(result, Reply):
                        return result
                    return paginate(result, context, self.totals_limit)
            except ApiError as error:
                return error.reply
            except Exception:
                # A bug in the fake returns 500, so the test shows it instead of a
                # dropped connection that looks like a network fault.
                logger.exception("fake GitLab route %s failed", method_name)
                return Reply.json(500, {"message": "500 Internal Server Error"})
        return Reply.json(404, {"error": "404 Not Found"})

    # -- routes ----------------------------------------------------------------------

    def _project_or_404(self, project_key: str) -> Project:
        project = self._find_project(unquote(project_key))
        if project is None:
            raise ApiError(404, {"message": "404 Project Not Found"})
        return project

    def _merge_request_or_404(
        self, project_key: str, iid: str
    ) -> tuple[Project, Record]:
        project = self._project_or_404(project_key)
        record = project.merge_requests.get(int(iid))
        if record is None:
            raise ApiError(404, {"message": "404 Not found"})
        return project, record

    def _get_user(self, context: _RequestContext) -> Reply:
        user = {
            **FAKE_USER,
            "web_url": f"{self.url}/{FAKE_USER['username']}",
            "created_at": "2020-01-01T00:00:00.000Z",
            "bot": True,
            "locked": False,
        }
        return Reply.json(200, user)

    def _get_token_self(self, context: _RequestContext) -> Reply:
        return Reply.json(
            200,
            {
                "id": 4242,
                "name": "mhq-sync-agent",
                "revoked": False,
                "created_at": "2024-01-01T00:00:00.000Z",
                "scopes": list(self.token_scopes),
                "user_id": FAKE_USER["id"],
                "last_used_at": self._now(),
                "active": True,
                "expires_at": None,
            },
        )

    def _get_project(self, context: _RequestContext, project: str) -> Reply:
        return Reply.json(200, self._project_json(self._project_or_404(project)))

    def _get_group(self, context: _RequestContext, group: str) -> Reply:
        return Reply.json(200, self._group_json(self._group_or_404(group)))

    def _group_or_404(self, group_key: str) -> Group:
        group = self._find_group(unquote(group_key))
        if group is None:
            raise ApiError(404, {"message": "404 Group Not Found"})
        return group

    def _list_group_projects(
        self, context: _RequestContext, group: str
    ) -> list[Record]:
        found = self._group_or_404(group)
        include_subgroups = (
            context.query.get("include_subgroups", "false").lower() == "true"
        )
        projects = [
            project
            for project in self._projects.values()
            if project.namespace_path == found.full_path
            or (
                include_subgroups
                and project.namespace_path.startswith(found.full_path + "/")
            )
        ]
        order_by = _choice(
            context.query,
            "order_by",
            ("id", "name", "path", "created_at", "updated_at", "last_activity_at"),
            "created_at",
        )
        descending = _sort_descending(context.query, default="desc")
        records = [self._project_json(project) for project in projects]
        return _sorted(records, lambda record: record[order_by] or "", descending)

    def _list_subgroups(self, context: _RequestContext, group: str) -> list[Record]:
        found = self._group_or_404(group)
        children = [
            g for g in self._groups.values() if g.parent_path == found.full_path
        ]
        return [
            self._group_json(child)
            for child in sorted(children, key=lambda g: g.full_path)
        ]

    def _list_merge_requests(
        self, context: _RequestContext, project: str
    ) -> list[Record]:
        found = self._project_or_404(project)
        query = context.query
        state = _choice(
            query, "state", ("all", "opened", "closed", "locked", "merged"), "all"
        )
        order_by = _choice(
            query, "order_by", ("created_at", "updated_at", "title"), "created_at"
        )
        descending = _sort_descending(query, default="desc")

        records = list(found.merge_requests.values())
        if state != "all":
            records = [record for record in records if record.get("state") == state]
        records = _filter_by_time(
            records, "updated_at", query, "updated_after", "updated_before"
        )
        records = _filter_by_time(
            records, "created_at", query, "created_after", "created_before"
        )
        iids = _iids_filter(context.raw_query)
        if iids:
            records = [record for record in records if record["iid"] in iids]

        return _sorted(records, _sort_key(order_by), descending)

    def _get_merge_request(
        self, context: _RequestContext, project: str, iid: str
    ) -> Reply:
        return Reply.json(200, self._merge_request_or_404(project, iid)[1])

    def _list_merge_request_commits(
        self, context: _RequestContext, project: str, iid: str
    ) -> list[Record]:
        found, _ = self._merge_request_or_404(project, iid)
        return list(found.commits.get(int(iid), []))

    def _list_merge_request_notes(
        self, context: _RequestContext, project: str, iid: str
    ) -> list[Record]:
        found, _ = self._merge_request_or_404(project, iid)
        order_by = _choice(
            context.query, "order_by", ("created_at", "updated_at"), "created_at"
        )
        descending = _sort_descending(context.query, default="desc")
        notes = list(found.notes.get(int(iid), []))
        return _sorted(notes, _sort_key(order_by), descending)

    def _get_merge_request_approvals(
        self, context: _RequestContext, project: str, iid: str
    ) -> Reply:
        found, record = self._merge_request_or_404(project, iid)
        if self.approvals == "absent":
            return Reply.json(404, {"message": "404 Not found"})
        approvers = _approvers_from_notes(found.notes.get(int(iid), []))
        return Reply.json(200, _approvals_json(record, approvers))

    def _list_pipelines(self, context: _RequestContext, project: str) -> list[Record]:
        found = self._project_or_404(project)
        query = context.query
        order_by = _choice(
            query, "order_by", ("id", "status", "ref", "updated_at", "user_id"), "id"
        )
        descending = _sort_descending(query, default="desc")

        records = list(found.pipelines.values())
        records = _filter_by_time(
            records, "updated_at", query, "updated_after", "updated_before"
        )
        for name in ("status", "ref", "sha", "source"):
            if name in query:
                records = [
                    record for record in records if record.get(name) == query[name]
                ]
        return _sorted(records, _sort_key(order_by), descending)

    def _get_pipeline(
        self, context: _RequestContext, project: str, pipeline_id: str
    ) -> Reply:
        found = self._project_or_404(project)
        record = found.pipeline_details.get(int(pipeline_id)) or found.pipelines.get(
            int(pipeline_id)
        )
        if record is None:
            raise ApiError(404, {"message": "404 Not found"})
        return Reply.json(200, record)

    def _list_deployments(self, context: _RequestContext, project: str) -> list[Record]:
        found = self._project_or_404(project)
        query = context.query
        order_by = _choice(
            query,
            "order_by",
            ("id", "iid", "created_at", "updated_at", "finished_at", "ref"),
            "id",
        )
        descending = _sort_descending(query, default="asc")
        time_filtered = "updated_after" in query or "updated_before" in query
        if time_filtered and order_by != "updated_at":
            raise ApiError(
                400,
                {"message": _DEPLOYMENT_FILTER_ERROR},
            )

        records = list(found.deployments.values())
        records = _filter_by_time(
            records, "updated_at", query, "updated_after", "updated_before"
        )
        for name in ("status", "environment"):
            if name in query:
                records = [
                    record
                    for record in records
                    if _deployment_field(record, name) == query[name]
                ]
        return _sorted(records, _sort_key(order_by), descending)

    def _get_deployment(
        self, context: _RequestContext, project: str, deployment_id: str
    ) -> Reply:
        record = self._project_or_404(project).deployments.get(int(deployment_id))
        if record is None:
            raise ApiError(404, {"message": "404 Not found"})
        return Reply.json(200, record)

    # -- JSON shapes -----------------------------------------------------------------

    def _group_json(self, group: Group) -> Record:
        parent = self._groups.get(group.parent_path) if group.parent_path else None
        return {
            "id": group.id,
            "web_url": f"{self.url}/groups/{group.full_path}",
            "name": group.path,
            "path": group.path,
            "description": "",
            "visibility": "public",
            "full_name": " / ".join(group.full_path.split("/")),
            "full_path": group.full_path,
            "parent_id": parent.id if parent else None,
            "created_at": group.created_at,
        }

    def _project_json(self, project: Project) -> Record:
        group = self._groups.get(project.namespace_path)
        namespace = {
            "id": group.id if group else None,
            "name": project.namespace_path.rsplit("/", 1)[-1],
            "path": project.namespace_path.rsplit("/", 1)[-1],
            "kind": "group",
            "full_path": project.namespace_path,
            "parent_id": self._group_json(group)["parent_id"] if group else None,
            "avatar_url": None,
            "web_url": f"{self.url}/groups/{project.namespace_path}",
        }
        web_url = self.project_url(project.path_with_namespace)
        return {
            "id": project.id,
            "description": None,
            "name": project.path,
            "name_with_namespace": " / ".join(project.path_with_namespace.split("/")),
            "path": project.path,
            "path_with_namespace": project.path_with_namespace,
            "created_at": project.created_at,
            "default_branch": "master",
            "ssh_url_to_repo": f"git@127.0.0.1:{project.path_with_namespace}.git",
            "http_url_to_repo": f"{web_url}.git",
            "web_url": web_url,
            "visibility": "public",
            "namespace": namespace,
            "archived": False,
            "empty_repo": False,
            "last_activity_at": project.last_activity_at(),
        }


_PROJECT = r"/projects/(?P<project>[^/]+)"
_MERGE_REQUEST = _PROJECT + r"/merge_requests/(?P<iid>\d+)"
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern + r"/?$"), method)
    for pattern, method in (
        (r"/user", "_get_user"),
        (r"/personal_access_tokens/self", "_get_token_self"),
        (_PROJECT, "_get_project"),
        (_PROJECT + r"/merge_requests", "_list_merge_requests"),
        (_MERGE_REQUEST, "_get_merge_request"),
        (_MERGE_REQUEST + r"/commits", "_list_merge_request_commits"),
        (_MERGE_REQUEST + r"/notes", "_list_merge_request_notes"),
        (_MERGE_REQUEST + r"/approvals", "_get_merge_request_approvals"),
        (_PROJECT + r"/pipelines", "_list_pipelines"),
        (_PROJECT + r"/pipelines/(?P<pipeline_id>\d+)", "_get_pipeline"),
        (_PROJECT + r"/deployments", "_list_deployments"),
        (_PROJECT + r"/deployments/(?P<deployment_id>\d+)", "_get_deployment"),
        (r"/groups/(?P<group>[^/]+)", "_get_group"),
        (r"/groups/(?P<group>[^/]+)/projects", "_list_group_projects"),
        (r"/groups/(?P<group>[^/]+)/subgroups", "_list_subgroups"),
    )
]


class _GitLabHandler(JSONRequestHandler):
    server_version = "nginx"

    def _dispatch(self) -> None:
        self.read_body()
        app = cast(FakeGitLab, self.server.app)  # type: ignore[attr-defined]
        app._serve(self)

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


# -- pagination ----------------------------------------------------------------------


def paginate(items: list[Record], context: _RequestContext, totals_limit: int) -> Reply:
    """Return one page with GitLab's offset-pagination headers.

    Like gitlab.com, X-Total, X-Total-Pages and the "last" link are left out when the
    list is longer than totals_limit (10,000 on GitLab).
    """
    page = _int_param(context.query, "page", 1)
    per_page = _int_param(context.query, "per_page", DEFAULT_PER_PAGE)
    page = max(page, 1)
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)

    total = len(items)
    total_pages = max(1, math.ceil(total / per_page))
    start = (page - 1) * per_page
    has_next = start + per_page < total
    with_totals = total <= totals_limit

    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Next-Page": str(page + 1) if has_next else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
    }
    if with_totals:
        headers["X-Total"] = str(total)
        headers["X-Total-Pages"] = str(total_pages)

    last_page = total_pages if with_totals else None
    headers["Link"] = _link_header(context, page, has_next, last_page)
    return Reply.json(200, items[start : start + per_page], headers)


def _link_header(
    context: _RequestContext, page: int, has_next: bool, last_page: int | None
) -> str:
    """Build the Link header: prev, next, first, and last when totals are sent."""
    links = []
    if page > 1:
        links.append((page - 1, "prev"))
    if has_next:
        links.append((page + 1, "next"))
    links.append((1, "first"))
    if last_page is not None:
        links.append((last_page, "last"))
    return ", ".join(
        f'<{_page_url(context, number)}>; rel="{rel}"' for number, rel in links
    )


def _page_url(context: _RequestContext, page: int) -> str:
    pairs = parse_qsl(context.raw_query, keep_blank_values=True)
    replaced = [(name, str(page) if name == "page" else value) for name, value in pairs]
    if not any(name == "page" for name, _ in pairs):
        replaced.append(("page", str(page)))
    return f"{context.link_base}?{urlencode(replaced)}"


# -- query parameters, filters and shapes --------------------------------------------


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, {"error": f"{name} is invalid"}) from None


def _choice(
    query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str
) -> str:
    value = query.get(name, default)
    if value not in allowed:
        raise ApiError(400, {"error": f"{name} does not have a valid value"})
    return value


def _sort_descending(query: Mapping[str, str], default: str) -> bool:
    return _choice(query, "sort", ("asc", "desc"), default) == "desc"


def _time_param(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ApiError(400, {"error": f"{name} is invalid"}) from None


def _filter_by_time(
    records: list[Record],
    key: str,
    query: Mapping[str, str],
    after_name: str,
    before_name: str,
) -> list[Record]:
    """Keep records whose key (created_at when null) is within both bounds.

    Both bounds are inclusive, as in GitLab's UpdatedAtFilterable scopes.
    """
    after = _time_param(query, after_name)
    before = _time_param(query, before_name)
    kept = []
    for record in records:
        moment = effective_time(record, key)
        if after is not None and moment < after:
            continue
        if before is not None and moment > before:
            continue
        kept.append(record)
    return kept


def _iids_filter(raw_query: str) -> set[int]:
    values = [
        value for name, value in parse_qsl(raw_query) if name in ("iids[]", "iids")
    ]
    try:
        return {int(value) for value in values}
    except ValueError:
        raise ApiError(400, {"error": "iids is invalid"}) from None


def _sort_key(order_by: str) -> Callable[[Record], Any]:
    if order_by in ("created_at", "updated_at", "finished_at"):
        return lambda record: effective_time(record, order_by)
    if order_by == "user_id":
        return lambda record: (record.get("user") or {}).get("id") or 0
    return lambda record: record.get(order_by) or ""


def _sorted(
    records: list[Record], key: Callable[[Record], Any], descending: bool
) -> list[Record]:
    """Sort by key, then by id, like GitLab's tie-breaker."""
    return sorted(
        records,
        key=lambda record: (key(record), record.get("id") or 0),
        reverse=descending,
    )


def _deployment_field(record: Record, name: str) -> Any:
    if name == "environment":
        return (record.get("environment") or {}).get("name")
    return record.get(name)


def _approvers_from_notes(notes: list[Record]) -> list[Record]:
    """Replay approval system notes in time order and return who still approves."""
    approvers: dict[int, Record] = {}
    for note in sorted(notes, key=lambda n: (effective_time(n, "created_at"), n["id"])):
        if not note.get("system"):
            continue
        body = str(note.get("body", "")).strip()
        author = note.get("author") or {}
        if body == "approved this merge request":
            approvers[author["id"]] = author
        elif body == "unapproved this merge request":
            approvers.pop(author["id"], None)
    return list(approvers.values())


def _approvals_json(merge_request: Record, approvers: list[Record]) -> Record:
    """GitLab's merge request approvals shape, for a project without approval rules."""
    keys = (
        "id",
        "iid",
        "project_id",
        "title",
        "description",
        "state",
        "created_at",
        "updated_at",
    )
    return {
        **{key: merge_request.get(key) for key in keys},
        "merge_status": merge_request.get("merge_status"),
        "approved": bool(approvers),
        "approvals_required": 0,
        "approvals_left": 0,
        "require_password_to_approve": False,
        "approved_by": [{"user": approver} for approver in approvers],
        "suggested_approvers": [],
        "approvers": [],
        "approver_groups": [],
        "user_has_approved": False,
        "user_can_approve": False,
        "approval_rules_left": [],
        "has_approval_rules": False,
        "merge_request_approvers_available": False,
        "multiple_approval_rules_available": False,
        "invalid_approvers_rules": [],
    }


def _auth_kind(handler: _GitLabHandler) -> str | None:
    if handler.headers.get("PRIVATE-TOKEN"):
        return "private-token"
    if handler.headers.get("Authorization", "").lower().startswith("bearer "):
        return "bearer"
    return None


def _fault_name(fault: Fault | None) -> str | None:
    if fault is None:
        return None
    if fault.mode is not None:
        return fault.mode
    if fault.status is not None:
        return f"status {fault.status}"
    return "delay"


def _status_message(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _timestamp(value: str | datetime | None) -> str | None:
    if isinstance(value, datetime):
        return format_time(value)
    return value


def _project_of_record(record: Record, default: str) -> str:
    web_url = record.get("web_url")
    if isinstance(web_url, str) and "/-/" in web_url:
        return project_path_from_web_url(web_url)
    return default


def _server_ssl_context(tls: tuple[str | Path, str | Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
    return context


# -- command line ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve the fake GitLab until Ctrl-C."""
    args = _parse_args(argv)

    tls = None
    if args.tls_dir is not None:
        ca_path, cert_path, key_path = make_ca_and_server_cert(args.tls_dir)
        tls = (cert_path, key_path)
        print(f"GITLAB_CA_BUNDLE={ca_path}")

    fake = FakeGitLab(
        args.fixtures,
        token=args.token,
        prefix=args.prefix,
        tls=tls,
        latency_s=args.latency,
        approvals=args.approvals,
        totals_limit=args.totals_limit,
        port=args.port,
    )
    _serve_forever(fake)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fake GitLab REST API v4 on 127.0.0.1."
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port, or 0 for a free one"
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="access token to accept")
    parser.add_argument("--prefix", default="", help="URL path prefix, e.g. /gitlab")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES_DIR)
    parser.add_argument(
        "--approvals", choices=("absent", "from_notes"), default="absent"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every response"
    )
    parser.add_argument(
        "--totals-limit",
        type=int,
        default=10000,
        help="lists longer than this get no X-Total headers",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="serve HTTPS with a private CA and certificate written to this directory",
    )
    return parser.parse_args(argv)


def _serve_forever(fake: FakeGitLab) -> None:
    stop = install_stop_handlers()
    with fake:
        print(f"GITLAB_DOMAIN_URL={fake.url}")
        print(f"GITLAB_ACCESS_TOKEN={fake.token}")
        for project in sorted(fake._projects.values(), key=lambda p: p.id):
            print(
                f"project {project.id}: {fake.project_url(project.path_with_namespace)}"
            )
        print("Serving until Ctrl-C.", flush=True)
        stop.wait()
        print("Stopped.")


if __name__ == "__main__":
    main()
