"""A fake Bitbucket Cloud REST API 2.0 on 127.0.0.1, serving the recorded fixtures.

It paginates, filters, sorts, projects `fields` and fails like api.bitbucket.org, so
the agent can be tested against pagination, partial list objects, missing scopes,
revoked tokens, the hourly rate limit and network faults. Run
`python -m tests.fakes.bitbucket --port 0` to try it by hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import copy
import hashlib
import hmac
import http
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tests.fakes.bitbucket_data import (
    API_ORIGIN,
    DEFAULT_FIXTURES_DIR,
    PULL_REQUEST_STATES,
    REPOSITORY,
    WEB_ORIGIN,
    ActivityEntry,
    Record,
    Repository,
    Review,
    ReviewState,
    activity,
    format_time,
    load_dataset,
    make_user,
    parse_time,
    participants,
    pull_request_ref,
    time_or_min,
    update_entry,
    user_key,
)
from tests.fakes.gitlab import Fault, FaultMode
from tests.fakes.httpserver import (
    JSONRequestHandler,
    LoopbackServer,
    Reply,
    ServerThread,
    install_stop_handlers,
)

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "bb-test-token"
DEFAULT_SCOPES = ("repository", "pullrequest", "pipeline")
DEFAULT_PAGELEN = 10
RATE_LIMIT_WINDOW_S = 3600.0

FAKE_USER: Record = {
    "display_name": "MHQ Agent Bot",
    "links": {
        "self": {
            "href": f"{API_ORIGIN}/users/%7B00000000-0000-4000-8000-000000000099%7D"
        },
        "avatar": {"href": f"{WEB_ORIGIN}/account/mhq-agent-bot/avatar/"},
        "html": {"href": f"{WEB_ORIGIN}/%7B00000000-0000-4000-8000-000000000099%7D/"},
    },
    "type": "user",
    "uuid": "{00000000-0000-4000-8000-000000000099}",
    "account_id": "000000000000000000000099",
    "nickname": "mhq-agent-bot",
}

SCOPES_MESSAGE = "Your credentials lack one or more required privilege scopes."
RATE_LIMIT_MESSAGE = "Rate limit for this resource has been exceeded"

_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Bitbucket</title></head>"
    b"<body><h1>Something went wrong</h1></body></html>"
)


@dataclass(frozen=True)
class Limits:
    """Default and maximum pagelen of one endpoint."""

    default: int = DEFAULT_PAGELEN
    maximum: int = 100


PULL_REQUEST_LIMITS = Limits(maximum=50)
ACTIVITY_LIMITS = Limits(maximum=50)
LIST_LIMITS = Limits(maximum=100)

# The pull request list leaves these out unless `fields` requests them.
PULL_REQUEST_LIST_HIDDEN = ("values.participants", "values.reviewers")

# The action links of a pull request besides self and html, in the fixtures' order.
_PULL_REQUEST_LINKS = (
    "commits",
    "approve",
    "request-changes",
    "comments",
    "activity",
    "merge",
    "decline",
    "statuses",
)

PULL_REQUEST_SORTS = ("id", "created_on", "updated_on")
COMMENT_SORTS = ("id", "created_on", "updated_on")
PIPELINE_SORTS = ("created_on",)
DEPLOYMENT_SORTS = ("last_update_time",)


def error_body(message: str, detail: Any = None) -> Record:
    """Return Bitbucket's error object."""
    error: Record = {"message": message}
    if detail is not None:
        error["detail"] = detail
    return {"type": "error", "error": error}


class ApiError(Exception):
    """An error reply in Bitbucket's shape, raised from deep inside a route."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.payload = error_body(message, detail)


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received. path has no query string. query keeps the last
    value of each parameter, and params keeps every pair in order."""

    method: str
    path: str
    query: dict[str, str]
    params: tuple[tuple[str, str], ...]
    status: int | None
    time: float
    auth: str | None
    fault: str | None = None


@dataclass
class _RequestContext:
    """What a route needs besides its path parameters."""

    query: dict[str, str]
    params: list[tuple[str, str]]
    link_base: str

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.params if key == name]


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    method: str
    scope: str | None


class FakeBitbucket:
    """Bitbucket Cloud REST API 2.0 on 127.0.0.1, backed by the recorded fixtures."""

    def __init__(
        self,
        fixtures_dir: Path = DEFAULT_FIXTURES_DIR,
        token: str = DEFAULT_TOKEN,
        latency_s: float = 0.0,
        port: int = 0,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        rate_limit_per_hour: int | None = None,
    ) -> None:
        self.token = token
        self.scopes = tuple(scopes)
        self.latency_s = latency_s
        self.rate_limit_per_hour = rate_limit_per_hour

        dataset = load_dataset(Path(fixtures_dir))
        self._repositories = dataset.repositories
        self._workspaces = dataset.workspaces
        self._users = dataset.users

        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._stopping = threading.Event()
        self._counted_requests: collections.deque[float] = collections.deque()
        self._ids = itertools.count(int(time.time()))

        self._server = ServerThread(_BitbucketHandler, None, self._attach, port)

    # -- lifecycle -------------------------------------------------------------------

    def _attach(self, server: LoopbackServer) -> None:
        server.app = self  # type: ignore[attr-defined]

    def start(self) -> FakeBitbucket:
        self._stopping.clear()
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()

    def __enter__(self) -> FakeBitbucket:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def web_url(self) -> str:
        """Origin of the web links, such as a repository's links.html."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """API base URL to configure the agent with (BITBUCKET_API_URL)."""
        return f"{self.web_url}/2.0"

    def repository_url(self, full_name: str = REPOSITORY) -> str:
        """Return the web URL of a repository on this fake, as its links.html shows."""
        return f"{self.web_url}/{full_name}"

    def set_token(self, new_token: str) -> None:
        """Replace the accepted token, so requests with the old one get 401."""
        with self._lock:
            self.token = new_token

    def set_scopes(self, scopes: Iterable[str]) -> None:
        """Replace the scopes the token is granted."""
        with self._lock:
            self.scopes = tuple(scopes)

    def reset_rate_limit(self) -> None:
        """Forget the requests counted in the current hour."""
        with self._lock:
            self._counted_requests.clear()

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
        without query string, matches path_regex and whose query contains `query`.
        Faults are consumed in the order they were added.

        mode "reset" closes the connection without a response, "truncate" sends the
        normal response with its full Content-Length but only half the body, "html"
        returns 200 with an HTML page. Without mode, `status` sends that status with
        `body` (JSON unless str or bytes; Bitbucket's error object by default) and
        `headers`. A fault with only delay_s delays the normal response.
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
        """Return logged requests whose path (no query string) matches pattern."""
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

    def repository(self, full_name: str = REPOSITORY) -> Repository:
        """Return the live repository object, not a copy. Raise KeyError if unknown."""
        workspace, _, slug = full_name.partition("/")
        with self._lock:
            found = self._find_repository(workspace, slug)
        if found is None:
            raise KeyError(f"no repository {full_name!r} on the fake Bitbucket")
        return found

    def _find_repository(self, workspace: str, slug: str) -> Repository | None:
        for repository in self._repositories.values():
            record = repository.record
            workspace_ids = (repository.workspace, record["workspace"].get("uuid"))
            slug_ids = (repository.slug, record.get("uuid"))
            if _matches_any(workspace, workspace_ids) and _matches_any(slug, slug_ids):
                return repository
        return None

    def _find_workspace(self, key: str) -> Record | None:
        for slug, workspace in self._workspaces.items():
            if _matches_any(key, (slug, workspace.get("uuid"))):
                return workspace
        return None

    def _user(self, user: Record | str) -> Record:
        """Return a user object for a user object, nickname, uuid or account_id."""
        if isinstance(user, dict):
            return copy.deepcopy(user)
        for known in [FAKE_USER, *self._users.values()]:
            if user in (
                known.get("nickname"),
                known.get("uuid"),
                known.get("account_id"),
            ):
                return copy.deepcopy(known)
        return make_user(user)

    def _resolve_people(self, record: Record) -> None:
        """Replace nicknames in author, closed_by and reviewers with user objects."""
        for name in ("author", "closed_by"):
            if isinstance(record.get(name), str):
                record[name] = self._user(record[name])
        if isinstance(record.get("reviewers"), list):
            record["reviewers"] = [self._user(r) for r in record["reviewers"]]

    def _now(self) -> str:
        return format_time(datetime.now(UTC))

    def _next_id(self) -> int:
        return next(self._ids)

    def _localize(self, payload: Record) -> Record:
        """Return a copy of payload with Bitbucket's hosts replaced by this fake's."""
        text = self._localize_text(json.dumps(payload, ensure_ascii=False))
        return cast(Record, json.loads(text))

    def _localize_text(self, text: str) -> str:
        text = text.replace(API_ORIGIN, self.url)
        return _WEB_HOST.sub(
            lambda match: f"http://{match.group(1) or ''}127.0.0.1:{self.port}", text
        )

    # -- mutation helpers ------------------------------------------------------------

    def update_pull_request(
        self,
        pull_request_id: int,
        *,
        repository: str = REPOSITORY,
        updated_on: str | datetime | None = None,
        **fields: Any,
    ) -> Record:
        """Change fields of a pull request and bump its updated_on (default: now).

        author, closed_by and reviewers may be given as nicknames. This adds no
        activity entry, so use merge() or decline() for state changes that the
        activity log records.
        """
        with self._lock:
            record = self._pull_request(repository, pull_request_id)
            record.update(copy.deepcopy(fields))
            self._resolve_people(record)
            record["updated_on"] = _timestamp(updated_on) or self._now()
            return self._localize(record)

    def add_pull_request(
        self, record: Record, *, repository: str = REPOSITORY
    ) -> Record:
        """Add a pull request, filling in what is missing from a fixture template.

        author, closed_by and reviewers may be given as nicknames. Like the fixtures,
        the pull request gets an OPEN update in the activity log at created_on.
        """
        with self._lock:
            target = self.repository(repository)
            template = next(iter(target.pull_requests.values()), {})
            number = record.get("id") or max(target.pull_requests, default=0) + 1
            stored = self._new_pull_request(target, template, number)
            stored.update(copy.deepcopy(record))
            self._resolve_people(stored)
            stored.setdefault("updated_on", stored["created_on"])
            target.pull_requests[number] = stored
            opened = update_entry(
                stored, "OPEN", stored["created_on"], stored["author"]
            )
            target.updates[number] = [opened]
            return self._localize(stored)

    def _new_pull_request(
        self, target: Repository, template: Record, number: int
    ) -> Record:
        now = self._now()
        base = f"{API_ORIGIN}/repositories/{target.full_name}/pullrequests/{number}"
        html = f"{WEB_ORIGIN}/{target.full_name}/pull-requests/{number}"
        links: Record = {"self": {"href": base}, "html": {"href": html}}
        for name in _PULL_REQUEST_LINKS:
            links[name] = {"href": f"{base}/{name}"}
        return {
            "comment_count": 0,
            "task_count": 0,
            "type": "pullrequest",
            "id": number,
            "title": f"Pull request {number}",
            "description": "",
            "state": "OPEN",
            "merge_commit": None,
            "close_source_branch": False,
            "closed_by": None,
            "author": copy.deepcopy(FAKE_USER),
            "reason": "",
            "created_on": now,
            "destination": copy.deepcopy(template.get("destination")),
            "source": copy.deepcopy(template.get("source")),
            "links": links,
            "summary": {
                "type": "rendered",
                "raw": "",
                "markup": "markdown",
                "html": "",
            },
        }

    def add_comment(
        self,
        pull_request_id: int,
        comment: Record,
        *,
        repository: str = REPOSITORY,
        bump_updated_on: bool = True,
    ) -> Record:
        """Add a comment to a pull request, filling in ids, times and links.

        It raises comment_count by one and, by default, moves the pull request's
        updated_on to the comment's created_on.
        """
        with self._lock:
            target = self.repository(repository)
            record = self._pull_request(repository, pull_request_id)
            comment_id = comment.get("id") or self._next_id()
            now = self._now()
            base = record["links"]["self"]["href"]
            html = record["links"]["html"]["href"]
            stored: Record = {
                "id": comment_id,
                "created_on": now,
                "updated_on": now,
                "content": {},
                "user": copy.deepcopy(FAKE_USER),
                "deleted": False,
                "type": "pullrequest_comment",
                "links": {
                    "self": {"href": f"{base}/comments/{comment_id}"},
                    "html": {"href": f"{html}/_/diff#comment-{comment_id}"},
                },
                "pullrequest": pull_request_ref(record),
            }
            stored.update(copy.deepcopy(comment))
            if isinstance(comment.get("user"), str):
                stored["user"] = self._user(comment["user"])
            content = {
                "type": "rendered",
                "raw": "",
                "markup": "markdown",
                **stored["content"],
            }
            content.setdefault("html", f"<p>{content['raw']}</p>")
            stored["content"] = content
            target.comments.setdefault(pull_request_id, []).append(stored)
            record["comment_count"] = record.get("comment_count", 0) + 1
            if bump_updated_on:
                record["updated_on"] = stored["created_on"]
            return self._localize(stored)

    def approve(
        self,
        pull_request_id: int,
        user: Record | str,
        date: str | datetime | None = None,
        *,
        repository: str = REPOSITORY,
        bump_updated_on: bool = False,
    ) -> Record:
        """Record an approval. It replaces the user's change request, if any."""
        return self._review(
            repository, pull_request_id, user, "approved", date, bump_updated_on
        )

    def request_changes(
        self,
        pull_request_id: int,
        user: Record | str,
        date: str | datetime | None = None,
        *,
        repository: str = REPOSITORY,
        bump_updated_on: bool = False,
    ) -> Record:
        """Record a change request. It replaces the user's approval, if any."""
        return self._review(
            repository,
            pull_request_id,
            user,
            "changes_requested",
            date,
            bump_updated_on,
        )

    def unapprove(
        self,
        pull_request_id: int,
        user: Record | str,
        *,
        repository: str = REPOSITORY,
        bump_updated_on: bool = False,
    ) -> None:
        """Take back a user's approval, which also removes it from the activity log.

        The user stays in participants with approved false, state null and
        participated_on at the time of the unapproval. Raise KeyError when the user
        has not approved the pull request.
        """
        with self._lock:
            record = self._pull_request(repository, pull_request_id)
            reviews = self.repository(repository).reviews.get(pull_request_id, {})
            review = reviews.get(user_key(self._user(user)))
            if review is None or review.state != "approved":
                raise KeyError(f"{user!r} has not approved #{pull_request_id}")
            review.state = None
            review.date = self._now()
            if bump_updated_on:
                record["updated_on"] = review.date

    def _review(
        self,
        repository: str,
        pull_request_id: int,
        user: Record | str,
        state: ReviewState,
        date: str | datetime | None,
        bump_updated_on: bool,
    ) -> Record:
        # NOTE: Whether Bitbucket Cloud moves a pull request's updated_on on approval
        # is not verified here, so it stays unchanged unless bump_updated_on is set.
        with self._lock:
            record = self._pull_request(repository, pull_request_id)
            reviewer = self._user(user)
            when = _timestamp(date) or self._now()
            reviews = self.repository(repository).reviews.setdefault(
                pull_request_id, {}
            )
            reviews[user_key(reviewer)] = Review(reviewer, state, when)
            if bump_updated_on:
                record["updated_on"] = when
            payload = {
                "date": when,
                "user": reviewer,
                "pullrequest": pull_request_ref(record),
            }
            return self._localize(payload)

    def merge(
        self,
        pull_request_id: int,
        user: Record | str,
        *,
        repository: str = REPOSITORY,
        date: str | datetime | None = None,
        merge_commit: str | None = None,
    ) -> Record:
        """Merge an open pull request: state MERGED, closed_by, merge_commit, and an
        update entry with state MERGED in the activity log."""
        with self._lock:
            record = self._pull_request(repository, pull_request_id)
            merger = self._user(user)
            when = _timestamp(date) or self._now()
            seed = f"{repository}#{pull_request_id}".encode()
            digest = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
            commit_hash = merge_commit or digest[:12]
            self._close(repository, record, "MERGED", merger, when)
            api = f"{API_ORIGIN}/repositories/{repository}"
            web = f"{WEB_ORIGIN}/{repository}"
            record["merge_commit"] = {
                "type": "commit",
                "hash": commit_hash,
                "links": {
                    "self": {"href": f"{api}/commit/{commit_hash}"},
                    "html": {"href": f"{web}/commits/{commit_hash}"},
                },
            }
            return self._localize(record)

    def decline(
        self,
        pull_request_id: int,
        user: Record | str,
        *,
        repository: str = REPOSITORY,
        date: str | datetime | None = None,
        reason: str = "",
    ) -> Record:
        """Decline an open pull request: state DECLINED, closed_by, reason, and an
        update entry with state DECLINED in the activity log."""
        with self._lock:
            record = self._pull_request(repository, pull_request_id)
            record["reason"] = reason
            self._close(
                repository,
                record,
                "DECLINED",
                self._user(user),
                _timestamp(date) or self._now(),
            )
            return self._localize(record)

    def _close(
        self, repository: str, record: Record, state: str, user: Record, when: str
    ) -> None:
        if record["state"] != "OPEN":
            raise ValueError(
                f"pull request #{record['id']} is {record['state']}, not OPEN"
            )
        record["state"] = state
        record["closed_by"] = user
        record["updated_on"] = when
        updates = self.repository(repository).updates.setdefault(record["id"], [])
        updates.append(update_entry(record, state, when, user))

    def add_pipeline(self, record: Record, *, repository: str = REPOSITORY) -> Record:
        """Add a pipeline, filling in a uuid and created_on when missing."""
        with self._lock:
            target = self.repository(repository)
            stored = copy.deepcopy(record)
            stored.setdefault("type", "pipeline")
            stored.setdefault("uuid", _new_uuid())
            stored.setdefault("created_on", self._now())
            target.pipelines[stored["uuid"]] = stored
            return self._localize(stored)

    def add_deployment(self, record: Record, *, repository: str = REPOSITORY) -> Record:
        """Add a deployment, filling in a uuid and last_update_time when missing."""
        with self._lock:
            target = self.repository(repository)
            stored = copy.deepcopy(record)
            stored.setdefault("type", "deployment")
            stored.setdefault("uuid", _new_uuid())
            stored.setdefault("last_update_time", self._now())
            target.deployments[stored["uuid"]] = stored
            return self._localize(stored)

    def delete_repository(self, full_name: str = REPOSITORY) -> None:
        """Remove a repository, so every request for it gets 404."""
        with self._lock:
            found = self.repository(full_name)
            del self._repositories[found.full_name]

    def _pull_request(self, repository: str, pull_request_id: int) -> Record:
        record = self.repository(repository).pull_requests.get(pull_request_id)
        if record is None:
            raise KeyError(f"{repository} has no pull request #{pull_request_id}")
        return record

    # -- request handling ------------------------------------------------------------

    def _serve(self, handler: _BitbucketHandler) -> None:
        """Handle one request: latency, faults, rate limit, auth, scopes, route."""
        started = time.time()
        split = urlsplit(handler.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        query = dict(params)

        fault = self._wait_and_take_fault(split.path, query)
        reply: Reply | None = None
        if fault is None or fault.mode != "reset":
            reply = self._fault_reply(fault) if fault is not None else None
            if reply is None:
                reply = self._normal_reply(handler, split.path, params)

        # Log before sending, so a test that has the response also finds the entry.
        self._record(
            LoggedRequest(
                handler.command,
                split.path,
                query,
                tuple(params),
                reply.status if reply is not None else None,
                started,
                _auth_kind(handler),
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
            payload = error_body(_status_phrase(fault.status))
        return Reply.json(fault.status, payload, fault.headers)

    def _normal_reply(
        self, handler: _BitbucketHandler, path: str, params: list[tuple[str, str]]
    ) -> Reply:
        if handler.command not in ("GET", "HEAD"):
            return Reply.json(405, error_body("Method not allowed"))
        if self._rate_limit_exceeded():
            return Reply.json(429, error_body(RATE_LIMIT_MESSAGE))
        if handler.headers.get("Authorization") is None:
            return Reply.json(401, error_body("Unauthorized"))
        if not self._authorized(handler):
            return Reply.json(401, error_body("Access token expired."))

        route, match = _find_route(path)
        if route is None or match is None:
            return Reply.json(404, error_body("Resource not found"))
        with self._lock:
            granted = list(self.scopes)
        if route.scope is not None and route.scope not in granted:
            detail = {"granted": granted, "required": [route.scope]}
            return Reply.json(403, error_body(SCOPES_MESSAGE, detail))

        host = handler.headers.get("Host") or f"127.0.0.1:{self.port}"
        context = _RequestContext(dict(params), params, f"http://{host}{path}")
        return self._run_route(route, match, context)

    def _authorized(self, handler: _BitbucketHandler) -> bool:
        authorization = handler.headers.get("Authorization", "")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        with self._lock:
            expected = self.token
        return hmac.compare_digest(presented.strip().encode(), expected.encode())

    def _rate_limit_exceeded(self) -> bool:
        """Count one request in a sliding hour of rate_limit_per_hour requests.

        A request over the limit is not counted, so the budget returns one request at
        a time as the oldest ones leave the hour.
        """
        if self.rate_limit_per_hour is None:
            return False
        with self._lock:
            now = time.monotonic()
            while (
                self._counted_requests
                and now - self._counted_requests[0] >= RATE_LIMIT_WINDOW_S
            ):
                self._counted_requests.popleft()
            if len(self._counted_requests) >= self.rate_limit_per_hour:
                return True
            self._counted_requests.append(now)
            return False

    def _run_route(
        self, route: _Route, match: re.Match[str], context: _RequestContext
    ) -> Reply:
        handler = cast(Callable[..., Any], getattr(self, route.method))
        arguments = {name: unquote(value) for name, value in match.groupdict().items()}
        try:
            with self._lock:
                payload, hidden = handler(context, **arguments)
                payload = project_fields(payload, context.query.get("fields"), hidden)
                body = self._localize_text(json.dumps(payload, ensure_ascii=False))
        except ApiError as error:
            logger.debug(
                "fake Bitbucket %s %s: %s", route.method, error.status, error.payload
            )
            return Reply.json(error.status, error.payload)
        except Exception:
            # A bug in the fake returns 500, so the test shows it instead of a
            # dropped connection that looks like a network fault.
            logger.exception("fake Bitbucket route %s failed", route.method)
            return Reply.json(500, error_body("Internal Server Error"))
        return Reply(200, body.encode("utf-8"), {"Content-Type": "application/json"})

    # -- routes ----------------------------------------------------------------------
    # Each route returns the response object and the paths that `fields` must name
    # before they are shown.

    def _repository_or_404(self, workspace: str, slug: str) -> Repository:
        found = self._find_repository(workspace, slug)
        if found is None:
            raise ApiError(404, f"Repository {workspace}/{slug} not found")
        return found

    def _pull_request_or_404(
        self, workspace: str, slug: str, pull_request_id: str
    ) -> tuple[Repository, Record]:
        repository = self._repository_or_404(workspace, slug)
        record = repository.pull_requests.get(int(pull_request_id))
        if record is None:
            raise ApiError(404, f"Pull request #{pull_request_id} not found")
        return repository, record

    def _get_user(self, context: _RequestContext) -> tuple[Record, tuple[str, ...]]:
        user = {
            **FAKE_USER,
            "created_on": "2020-01-01T00:00:00.000000+00:00",
            "is_staff": False,
            "account_status": "active",
            "has_2fa_enabled": None,
        }
        return user, ()

    def _list_repositories(
        self, context: _RequestContext, workspace: str
    ) -> tuple[Record, tuple[str, ...]]:
        found = self._find_workspace(workspace)
        if found is None:
            raise ApiError(404, f"No workspace with identifier '{workspace}'.")
        records = [
            repository.record
            for repository in self._repositories.values()
            if repository.workspace == found["slug"]
        ]
        return paginate(records, context, LIST_LIMITS), ()

    def _get_repository(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        return self._repository_or_404(workspace, slug).record, ()

    def _list_pull_requests(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        states = _pull_request_states(context)
        condition = parse_query(context.query.get("q"))
        if not states and not condition.mentions("state"):
            # Bitbucket lists only open pull requests unless other states are requested.
            states = {"OPEN"}

        records = [
            self._pull_request_json(repository, record)
            for record in repository.pull_requests.values()
            if (not states or record.get("state") in states) and condition(record)
        ]
        # NOTE: Bitbucket documents no default order. The fixtures, captured without
        # sort, are newest updated_on first, so that is the default here.
        records = sort_records(
            records, context.query.get("sort", "-updated_on"), PULL_REQUEST_SORTS
        )
        return paginate(records, context, PULL_REQUEST_LIMITS), PULL_REQUEST_LIST_HIDDEN

    def _get_pull_request(
        self, context: _RequestContext, workspace: str, slug: str, pull_request_id: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository, record = self._pull_request_or_404(workspace, slug, pull_request_id)
        return self._pull_request_json(repository, record), ()

    def _list_pull_request_commits(
        self, context: _RequestContext, workspace: str, slug: str, pull_request_id: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository, record = self._pull_request_or_404(workspace, slug, pull_request_id)
        commits = repository.commits.get(record["id"], [])
        # NOTE: Assumes pull request commit pages carry neither size nor page, like
        # Bitbucket's cursor-paginated repository commit lists.
        return paginate(commits, context, LIST_LIMITS, totals=False), ()

    def _list_pull_request_comments(
        self, context: _RequestContext, workspace: str, slug: str, pull_request_id: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository, record = self._pull_request_or_404(workspace, slug, pull_request_id)
        condition = parse_query(context.query.get("q"))
        comments = [
            c for c in repository.comments.get(record["id"], []) if condition(c)
        ]
        if "sort" in context.query:
            comments = sort_records(comments, context.query["sort"], COMMENT_SORTS)
        return paginate(comments, context, LIST_LIMITS), ()

    def _list_repository_activity(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        entries = activity(repository, list(repository.pull_requests))
        return paginate_activity(entries, context), ()

    def _list_pull_request_activity(
        self, context: _RequestContext, workspace: str, slug: str, pull_request_id: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository, record = self._pull_request_or_404(workspace, slug, pull_request_id)
        entries = activity(repository, [record["id"]])
        return paginate_activity(entries, context), ()

    def _list_pipelines(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        records = list(repository.pipelines.values())
        if "sort" in context.query:
            records = sort_records(records, context.query["sort"], PIPELINE_SORTS)
        return paginate(records, context, LIST_LIMITS), ()

    def _list_pipeline_steps(
        self, context: _RequestContext, workspace: str, slug: str, pipeline: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        key = pipeline if pipeline.startswith("{") else f"{{{pipeline}}}"
        if key not in repository.pipelines:
            raise ApiError(404, f"Pipeline {key} not found")
        return paginate(repository.steps.get(key, []), context, LIST_LIMITS), ()

    def _list_deployments(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        records = list(repository.deployments.values())
        if "sort" in context.query:
            records = sort_records(records, context.query["sort"], DEPLOYMENT_SORTS)
        return paginate(records, context, LIST_LIMITS), ()

    def _pull_request_json(self, repository: Repository, record: Record) -> Record:
        """Return the full pull request, with reviewers and participants."""
        return {
            **record,
            "reviewers": record.get("reviewers") or [],
            "participants": participants(repository, record["id"]),
        }


_WEB_HOST = re.compile(r"https://([\w.-]+@)?bitbucket\.org(?=[/\"])")

_REPOSITORY_PATH = r"/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)"
_PULL_REQUEST_PATH = _REPOSITORY_PATH + r"/pullrequests/(?P<pull_request_id>\d+)"
_ROUTES: list[_Route] = [
    _Route(re.compile(pattern + r"/?$"), method, scope)
    for pattern, method, scope in (
        (r"/2\.0/user", "_get_user", None),
        (
            r"/2\.0/repositories/(?P<workspace>[^/]+)",
            "_list_repositories",
            "repository",
        ),
        (_REPOSITORY_PATH, "_get_repository", "repository"),
        (
            _REPOSITORY_PATH + r"/pullrequests",
            "_list_pull_requests",
            "pullrequest",
        ),
        (
            _REPOSITORY_PATH + r"/pullrequests/activity",
            "_list_repository_activity",
            "pullrequest",
        ),
        (_PULL_REQUEST_PATH, "_get_pull_request", "pullrequest"),
        (
            _PULL_REQUEST_PATH + r"/commits",
            "_list_pull_request_commits",
            "pullrequest",
        ),
        (
            _PULL_REQUEST_PATH + r"/comments",
            "_list_pull_request_comments",
            "pullrequest",
        ),
        (
            _PULL_REQUEST_PATH + r"/activity",
            "_list_pull_request_activity",
            "pullrequest",
        ),
        (_REPOSITORY_PATH + r"/pipelines", "_list_pipelines", "pipeline"),
        (
            _REPOSITORY_PATH + r"/pipelines/(?P<pipeline>[^/]+)/steps",
            "_list_pipeline_steps",
            "pipeline",
        ),
        (_REPOSITORY_PATH + r"/deployments", "_list_deployments", "pipeline"),
    )
]


def _find_route(path: str) -> tuple[_Route | None, re.Match[str] | None]:
    for route in _ROUTES:
        match = route.pattern.match(path)
        if match is not None:
            return route, match
    return None, None


class _BitbucketHandler(JSONRequestHandler):
    server_version = "nginx"

    def _dispatch(self) -> None:
        self.read_body()
        app = cast(FakeBitbucket, self.server.app)  # type: ignore[attr-defined]
        app._serve(self)

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


# -- pagination ----------------------------------------------------------------------


def paginate(
    items: list[Record],
    context: _RequestContext,
    limits: Limits,
    *,
    totals: bool = True,
) -> Record:
    """Return one page: values, pagelen, and size and page when totals is set, plus
    next as an absolute URL when a later page exists.

    pagelen above the endpoint's maximum is capped to it. A page past the last one
    gets 404 "Invalid page".
    """
    # NOTE: The 404 for a page past the end is assumed Bitbucket behavior, not
    # checked against its documentation.
    page = _int_param(context.query, "page", 1)
    pagelen = _pagelen(context.query, limits)
    if page < 1:
        raise ApiError(400, "Invalid page")
    start = (page - 1) * pagelen
    if page > 1 and start >= len(items):
        raise ApiError(404, "Invalid page")

    body: Record = {"values": items[start : start + pagelen], "pagelen": pagelen}
    if totals:
        body["size"] = len(items)
        body["page"] = page
    if start + pagelen < len(items):
        body["next"] = _next_url(context, {"page": str(page + 1)})
    return body


def paginate_activity(entries: list[ActivityEntry], context: _RequestContext) -> Record:
    """Return one page of an activity log, newest first.

    Like Bitbucket, next carries an opaque ctx cursor instead of a page number, and
    the page has no size or page. The cursor names the last entry served, so entries
    added since do not shift later pages. An explicit page parameter is honored too.
    """
    pagelen = _pagelen(context.query, ACTIVITY_LIMITS)
    if "ctx" in context.query:
        after = _decode_cursor(context.query["ctx"])
        remaining = [entry for entry in entries if entry.sort_key < after]
    else:
        page = _int_param(context.query, "page", 1)
        if page < 1:
            raise ApiError(400, "Invalid page")
        remaining = entries[(page - 1) * pagelen :]

    served = remaining[:pagelen]
    body: Record = {"values": [entry.entry for entry in served], "pagelen": pagelen}
    if len(remaining) > pagelen:
        cursor = _encode_cursor(served[-1].sort_key)
        body["next"] = _next_url(context, {"ctx": cursor}, drop=("page",))
    return body


def _next_url(
    context: _RequestContext, replace: Mapping[str, str], drop: Iterable[str] = ()
) -> str:
    """Return the request URL with the parameters in replace set, and those in drop
    removed, keeping every other parameter and its order."""
    dropped = set(drop)
    pairs: list[tuple[str, str]] = []
    done: set[str] = set()
    for name, value in context.params:
        if name in dropped:
            continue
        if name in replace:
            if name not in done:
                pairs.append((name, replace[name]))
                done.add(name)
            continue
        pairs.append((name, value))
    pairs.extend((name, value) for name, value in replace.items() if name not in done)
    return f"{context.link_base}?{urlencode(pairs, quote_via=quote)}"


def _encode_cursor(sort_key: tuple[int, str, int, str]) -> str:
    raw = json.dumps(list(sort_key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[int, str, int, str]:
    try:
        padded = value + "=" * (-len(value) % 4)
        micros, kind, number, ident = json.loads(base64.urlsafe_b64decode(padded))
        return int(micros), str(kind), int(number), str(ident)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, f"Invalid ctx: {value}") from None


def _pagelen(query: Mapping[str, str], limits: Limits) -> int:
    pagelen = _int_param(query, "pagelen", limits.default)
    if pagelen < 1:
        return limits.default
    return min(pagelen, limits.maximum)


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid {name}: {value}") from None


# -- sort, state and q ---------------------------------------------------------------


def sort_records(
    records: list[Record], sort: str, allowed: tuple[str, ...]
) -> list[Record]:
    """Sort by one field, descending with a leading "-". Ties keep their order.

    Records without the field sort as the earliest time, or as 0 for id.
    """
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name not in allowed:
        raise ApiError(400, f"Invalid sort field: {name}")

    def key(record: Record) -> Any:
        if name == "id":
            return record.get("id") or 0
        return time_or_min(record.get(name))

    return sorted(records, key=key, reverse=descending)


def _pull_request_states(context: _RequestContext) -> set[str]:
    """Return the states named by the repeatable state parameter.

    "ALL" is every state. The fixtures were captured with state=all and hold
    both OPEN and MERGED pull requests.
    """
    states: set[str] = set()
    for value in context.values("state"):
        state = value.strip().upper()
        if state == "ALL":
            states.update(PULL_REQUEST_STATES)
        elif state in PULL_REQUEST_STATES:
            states.add(state)
        else:
            raise ApiError(400, f"Invalid state: {value}")
    return states


class Condition:
    """A parsed BBQL `q` filter. Calling it on a record returns whether it matches."""

    def __init__(
        self, test: Callable[[Record], bool], fields: frozenset[str] = frozenset()
    ) -> None:
        self._test = test
        self.fields = fields

    def __call__(self, record: Record) -> bool:
        return self._test(record)

    def mentions(self, name: str) -> bool:
        return name in self.fields


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<op>!=|>=|<=|!~|=|>|<|~)
      | "(?P<string>(?:[^"\\]|\\.)*)"
      | (?P<word>[^\s()"=!<>~]+)
    )""",
    re.VERBOSE,
)
_TIME_FIELDS = frozenset({"created_on", "updated_on"})
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")


def parse_query(q: str | None) -> Condition:
    """Parse the subset of Bitbucket's query language (BBQL) the fake supports.

    Comparisons `field op value` with op one of = != > >= < <= ~ !~, joined by AND
    and OR (AND binds tighter) and grouped with parentheses. A field is a dotted
    path such as updated_on, state or author.nickname. A value is a "string", a
    number, an unquoted ISO time, true, false or null. created_on and updated_on
    compare as times.
    """
    if q is None or not q.strip():
        return Condition(lambda record: True)
    tokens = _tokenize(q)
    parser = _QueryParser(tokens, q)
    condition = parser.parse_or()
    if parser.position != len(tokens):
        raise ApiError(400, f"Invalid query: unexpected token in {q!r}")
    return condition


def _tokenize(q: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(q):
        if q[position:].strip() == "":
            break
        match = _TOKEN.match(q, position)
        if match is None or match.end() == position:
            raise ApiError(400, f"Invalid query: cannot parse {q!r}")
        kind = cast(str, match.lastgroup)
        text = match.group(kind)
        if kind == "string":
            text = re.sub(r"\\(.)", r"\1", text)
        tokens.append((kind, text))
        position = match.end()
    return tokens


class _QueryParser:
    def __init__(self, tokens: list[tuple[str, str]], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.position = 0

    def _peek(self) -> tuple[str, str] | None:
        if self.position < len(self.tokens):
            return self.tokens[self.position]
        return None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ApiError(400, f"Invalid query: {self.source!r} ends too early")
        self.position += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == "word" and token[1].upper() == word:
            self.position += 1
            return True
        return False

    def parse_or(self) -> Condition:
        parts = [self.parse_and()]
        while self._keyword("OR"):
            parts.append(self.parse_and())
        if len(parts) == 1:
            return parts[0]
        return Condition(
            lambda record: any(part(record) for part in parts),
            frozenset().union(*(part.fields for part in parts)),
        )

    def parse_and(self) -> Condition:
        parts = [self.parse_term()]
        while self._keyword("AND"):
            parts.append(self.parse_term())
        if len(parts) == 1:
            return parts[0]
        return Condition(
            lambda record: all(part(record) for part in parts),
            frozenset().union(*(part.fields for part in parts)),
        )

    def parse_term(self) -> Condition:
        token = self._take()
        if token == ("paren", "("):
            inner = self.parse_or()
            if self._take() != ("paren", ")"):
                raise ApiError(400, f"Invalid query: missing ')' in {self.source!r}")
            return inner
        if token[0] != "word":
            raise ApiError(400, f"Invalid query: expected a field in {self.source!r}")

        name = token[1]
        kind, operator = self._take()
        if kind != "op":
            raise ApiError(400, f"Invalid query: expected an operator after {name}")
        value = _query_value(self._take(), name)
        return Condition(
            lambda record: _compare(_field_value(record, name), operator, value),
            frozenset({name}),
        )


def _query_value(token: tuple[str, str], name: str) -> Any:
    kind, text = token
    if kind not in ("string", "word"):
        raise ApiError(400, f"Invalid query: expected a value for {name}")
    if name in _TIME_FIELDS or (kind == "word" and _ISO_TIME.match(text)):
        try:
            return parse_time(text)
        except ValueError:
            raise ApiError(400, f"Invalid query: {text!r} is not a time") from None
    if kind == "string":
        return text
    literals = {"true": True, "false": False, "null": None}
    if text.lower() in literals:
        return literals[text.lower()]
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _field_value(record: Record, name: str) -> Any:
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if name.split(".")[-1] in _TIME_FIELDS and isinstance(value, str):
        return parse_time(value)
    return value


def _compare(actual: Any, operator: str, expected: Any) -> bool:
    if operator in ("~", "!~"):
        contains = str(expected).lower() in str(actual or "").lower()
        return contains if operator == "~" else not contains
    if operator == "=":
        return bool(actual == expected)
    if operator == "!=":
        return bool(actual != expected)
    if actual is None or expected is None:
        return False
    try:
        if operator == ">":
            return bool(actual > expected)
        if operator == ">=":
            return bool(actual >= expected)
        if operator == "<":
            return bool(actual < expected)
        return bool(actual <= expected)
    except TypeError:
        return False


# -- fields projection ---------------------------------------------------------------


def project_fields(payload: Any, fields: str | None, hidden: Iterable[str]) -> Any:
    """Apply Bitbucket's `fields` parameter to a response object.

    fields is a comma list of dotted paths. A path with "+" adds it to the default
    response, one with "-" removes it, and any path without a prefix restricts the
    response to the unprefixed and "+" paths. "*" matches every key at its level.
    Paths descend into every element of a list, such as values. hidden paths are
    left out of the default response, like participants in a pull request list.
    A "+" that reached the server as a space (an unencoded "+" in a query string)
    counts as "+".
    """
    specs = _field_specs(fields)
    restricting = any(operator == "" for operator, _ in specs)
    if restricting:
        result: Any = {}
        for operator, path in specs:
            if operator in ("", "+"):
                result = _merge(result, _select(payload, path))
    else:
        result = payload
        for hidden_path in hidden:
            result = _remove(result, hidden_path.split("."))
        for operator, path in specs:
            if operator == "+":
                result = _merge(result, _select(payload, path))

    for operator, path in specs:
        if operator == "-":
            result = _remove(result, path)
    return result


def _field_specs(fields: str | None) -> list[tuple[str, list[str]]]:
    specs: list[tuple[str, list[str]]] = []
    for raw in (fields or "").split(","):
        if not raw.strip():
            continue
        operator = ""
        if raw[0] in "+- ":
            operator = "+" if raw[0] in "+ " else "-"
            raw = raw[1:]
        raw = raw.strip()
        if raw:
            specs.append((operator, raw.split(".")))
    return specs


def _select(value: Any, path: list[str]) -> Any:
    """Return the parts of value on path, or _MISSING when there are none."""
    if not path:
        return value
    if isinstance(value, list):
        return [_select(item, path) for item in value]
    if not isinstance(value, dict):
        return _MISSING
    head, rest = path[0], path[1:]
    keys = list(value) if head == "*" else [head]
    selected = {}
    for key in keys:
        if key not in value:
            continue
        part = _select(value[key], rest)
        if part is not _MISSING:
            selected[key] = part
    return selected if selected or head == "*" else _MISSING


def _merge(left: Any, right: Any) -> Any:
    """Merge two projections of the same object. Lists merge element by element."""
    if right is _MISSING:
        return left
    if left is _MISSING:
        return right
    if isinstance(left, dict) and isinstance(right, dict):
        merged = dict(left)
        for key, value in right.items():
            merged[key] = _merge(left[key], value) if key in left else value
        return merged
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [_merge(a, b) for a, b in zip(left, right, strict=True)]
    return right


def _remove(value: Any, path: list[str]) -> Any:
    """Return a copy of value without the parts on path."""
    if not path:
        return value
    if isinstance(value, list):
        return [_remove(item, path) for item in value]
    if not isinstance(value, dict):
        return value
    head, rest = path[0], path[1:]
    result = {}
    for key, item in value.items():
        if head in ("*", key):
            if not rest:
                continue
            result[key] = _remove(item, rest)
        else:
            result[key] = item
    return result


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


# -- small helpers -------------------------------------------------------------------


def _matches_any(key: str, candidates: Iterable[Any]) -> bool:
    """Compare a path segment with slugs and uuids, ignoring case."""
    wanted = key.lower()
    return any(
        isinstance(candidate, str) and candidate.lower() == wanted
        for candidate in candidates
    )


def _new_uuid() -> str:
    return f"{{{uuid.uuid4()}}}"


def _timestamp(value: str | datetime | None) -> str | None:
    if isinstance(value, datetime):
        return format_time(value)
    return value


def _auth_kind(handler: _BitbucketHandler) -> str | None:
    authorization = handler.headers.get("Authorization")
    if not authorization:
        return None
    return authorization.partition(" ")[0].lower() or None


def _fault_name(fault: Fault | None) -> str | None:
    if fault is None:
        return None
    if fault.mode is not None:
        return fault.mode
    if fault.status is not None:
        return f"status {fault.status}"
    return "delay"


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return str(status)


# -- command line ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve the fake Bitbucket until Ctrl-C."""
    args = _parse_args(argv)
    fake = FakeBitbucket(
        args.fixtures,
        token=args.token,
        latency_s=args.latency,
        port=args.port,
        scopes=tuple(args.scopes.split(",")) if args.scopes else (),
        rate_limit_per_hour=args.rate_limit_per_hour,
    )
    stop = install_stop_handlers()
    with fake:
        print(f"BITBUCKET_API_URL={fake.url}")
        print(f"BITBUCKET_ACCESS_TOKEN={fake.token}")
        for workspace in sorted(fake._workspaces):
            print(f"BITBUCKET_WORKSPACE_NAME={workspace}")
        for full_name in sorted(fake._repositories):
            print(f"repository: {fake.repository_url(full_name)}")
        print("Serving until Ctrl-C.", flush=True)
        stop.wait()
        print("Stopped.")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fake Bitbucket Cloud REST API 2.0 on 127.0.0.1."
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port, or 0 for a free one"
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="access token to accept")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES_DIR)
    parser.add_argument(
        "--scopes",
        default=",".join(DEFAULT_SCOPES),
        help="comma-separated scopes the token is granted",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every response"
    )
    parser.add_argument(
        "--rate-limit-per-hour",
        type=int,
        default=None,
        help="requests allowed in a sliding hour before 429 (default: no limit)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
