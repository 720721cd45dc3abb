"""Load the recorded Bitbucket Cloud fixtures for the fake Bitbucket, and build the
objects Bitbucket derives from them: participants and the pull request activity log.

All records keep Bitbucket's own hosts (api.bitbucket.org, bitbucket.org). The fake
rewrites them to its own address when it sends a response.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

Record = dict[str, Any]
ReviewState = Literal["approved", "changes_requested"]

DEFAULT_FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "bitbucket"

API_ORIGIN = "https://api.bitbucket.org/2.0"
WEB_ORIGIN = "https://bitbucket.org"

WORKSPACE = "user-38"
REPOSITORY = "user-38/user-38php"
# pull_request_commits.json was requested for pull request #3 only.
COMMITS_PULL_REQUEST_ID = 3

PULL_REQUEST_STATES = ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")

_PULL_REQUEST_ID = re.compile(r"/pullrequests/(\d+)/")
_PIPELINE_UUID = re.compile(r"/pipelines/([^/]+)/steps")
_PSEUDONYM = re.compile(r"^user-(\d{1,12})$")


@dataclass
class Review:
    """A user's current approval or change request on one pull request.

    state None means the user took an approval back. They remain a participant,
    but the activity log no longer shows the approval.
    """

    user: Record
    state: ReviewState | None
    date: str


@dataclass
class Repository:
    """One repository and everything the fake serves under its path.

    Pull requests, pipelines and deployments keep fixture order, followed by
    records the tests add.
    """

    record: Record
    pull_requests: dict[int, Record] = field(default_factory=dict)
    comments: dict[int, list[Record]] = field(default_factory=dict)
    commits: dict[int, list[Record]] = field(default_factory=dict)
    # The "update" entries of each pull request's activity log, oldest first.
    updates: dict[int, list[Record]] = field(default_factory=dict)
    # Current approvals and change requests per pull request, keyed by user_key.
    reviews: dict[int, dict[str, Review]] = field(default_factory=dict)
    pipelines: dict[str, Record] = field(default_factory=dict)
    steps: dict[str, list[Record]] = field(default_factory=dict)
    deployments: dict[str, Record] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return str(self.record["full_name"])

    @property
    def workspace(self) -> str:
        return self.full_name.split("/", 1)[0]

    @property
    def slug(self) -> str:
        return self.full_name.split("/", 1)[1]


@dataclass
class Dataset:
    """All repositories, workspaces and known users the fake serves."""

    repositories: dict[str, Repository]
    workspaces: dict[str, Record]
    users: dict[str, Record]


@dataclass(frozen=True)
class ActivityEntry:
    """One entry of the activity log with its position in the newest-first order."""

    sort_key: tuple[int, str, int, str]
    entry: Record


# -- times ---------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    """Parse a Bitbucket or query timestamp. A value without a zone is taken as UTC.

    A space in place of the "+" of the zone offset is accepted, because an
    unencoded "+" in a query string is decoded as a space.
    """
    text = value.strip()
    text = re.sub(r"(\d) (\d{2}:?\d{2})$", r"\1+\2", text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_time(value: datetime) -> str:
    """Format like Bitbucket's pull requests: UTC, microseconds and +00:00."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def time_or_min(value: Any) -> datetime:
    """Return value as a datetime, or the earliest datetime when it is missing."""
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return parse_time(str(value))


# -- users ---------------------------------------------------------------------------


def user_key(user: Record) -> str:
    """Return the identity of a Bitbucket user object: uuid, else account_id."""
    return str(user.get("uuid") or user.get("account_id") or user.get("nickname"))


def make_user(nickname: str) -> Record:
    """Build a Bitbucket user object for a nickname that no fixture record has.

    A nickname user-NN gets the fixtures' pseudonymous uuid and account_id scheme, so
    "user-40" has uuid {00000000-0000-4000-8000-000000000040}.
    """
    match = _PSEUDONYM.match(nickname)
    if match is not None:
        number = int(match.group(1))
        user_uuid = f"{{00000000-0000-4000-8000-{number:012d}}}"
        account_id = f"{number:024d}"
        display_name = f"User {number}"
    else:
        generated = uuid.uuid5(uuid.NAMESPACE_URL, f"bitbucket-user:{nickname}")
        user_uuid = f"{{{generated}}}"
        account_id = generated.hex[:24]
        display_name = nickname
    encoded = user_uuid.replace("{", "%7B").replace("}", "%7D")
    return {
        "display_name": display_name,
        "links": {
            "self": {"href": f"{API_ORIGIN}/users/{encoded}"},
            "avatar": {"href": f"{WEB_ORIGIN}/account/{nickname}/avatar/"},
            "html": {"href": f"{WEB_ORIGIN}/{encoded}/"},
        },
        "type": "user",
        "uuid": user_uuid,
        "account_id": account_id,
        "nickname": nickname,
    }


# -- loading -------------------------------------------------------------------------


def load_dataset(fixtures_dir: Path = DEFAULT_FIXTURES_DIR) -> Dataset:
    """Return a fresh, mutable copy of the dataset for one fake Bitbucket."""
    return copy.deepcopy(_load_cached(fixtures_dir.resolve()))


@functools.lru_cache(maxsize=4)
def _load_cached(fixtures_dir: Path) -> Dataset:
    [record] = _read_json(fixtures_dir, "repositories.json")
    repository = Repository(record=record)

    _load_pull_requests(fixtures_dir, repository)
    _load_ci(fixtures_dir, repository)

    workspace = dict(record["workspace"])
    users = _collect_users(repository)
    return Dataset(
        repositories={repository.full_name: repository},
        workspaces={workspace["slug"]: workspace},
        users=users,
    )


def _read_json(fixtures_dir: Path, name: str) -> list[Record]:
    records = json.loads((fixtures_dir / name).read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{fixtures_dir / name}: expected a JSON array")
    return records


def _read_urls(fixtures_dir: Path, name: str, expected: int) -> list[str]:
    lines = (fixtures_dir / name).read_text(encoding="utf-8").splitlines()
    urls = [line.strip() for line in lines if line.strip()]
    if len(urls) != expected:
        raise ValueError(
            f"{fixtures_dir / name}: {len(urls)} URLs for {expected} records"
        )
    return urls


def _load_pull_requests(fixtures_dir: Path, repository: Repository) -> None:
    """Load pull requests with their comments and commits, and seed the activity log
    with one OPEN update per pull request, made by its author when it was created."""
    for record in _read_json(fixtures_dir, "pull_requests.json"):
        repository.pull_requests[record["id"]] = record
        update = update_entry(record, "OPEN", record["created_on"], record["author"])
        repository.updates[record["id"]] = [update]

    comments = _read_json(fixtures_dir, "pull_request_comments.json")
    urls = _read_urls(fixtures_dir, "pull_request_comments.urls.txt", len(comments))
    for comment, url in zip(comments, urls, strict=True):
        match = _PULL_REQUEST_ID.search(url)
        if match is None:
            raise ValueError(
                f"pull_request_comments.urls.txt: no pull request in {url}"
            )
        repository.comments.setdefault(int(match.group(1)), []).append(comment)

    commits = _read_json(fixtures_dir, "pull_request_commits.json")
    repository.commits[COMMITS_PULL_REQUEST_ID] = commits


def _load_ci(fixtures_dir: Path, repository: Repository) -> None:
    for record in _read_json(fixtures_dir, "pipelines.json"):
        repository.pipelines[record["uuid"]] = record

    steps = _read_json(fixtures_dir, "pipeline_steps.json")
    urls = _read_urls(fixtures_dir, "pipeline_steps.urls.txt", len(steps))
    for step, url in zip(steps, urls, strict=True):
        match = _PIPELINE_UUID.search(url)
        if match is None:
            raise ValueError(f"pipeline_steps.urls.txt: no pipeline uuid in {url}")
        repository.steps.setdefault(unquote(match.group(1)), []).append(step)

    for record in _read_json(fixtures_dir, "deployments.json"):
        repository.deployments[record["uuid"]] = record


def _collect_users(repository: Repository) -> dict[str, Record]:
    """Return every full user object in the fixtures, keyed by user_key."""
    found: list[Any] = [repository.record["owner"]]
    for record in repository.pull_requests.values():
        found += [record.get("author"), record.get("closed_by")]
    for comments in repository.comments.values():
        found += [comment.get("user") for comment in comments]
    return {
        user_key(user): user
        for user in found
        if isinstance(user, dict) and user.get("type") == "user"
    }


# -- derived objects -----------------------------------------------------------------


def pull_request_ref(record: Record) -> Record:
    """Return the short pull request object that comments and activity entries carry."""
    links = record.get("links") or {}
    return {
        "type": "pullrequest",
        "id": record["id"],
        "title": record.get("title"),
        "links": {name: links[name] for name in ("self", "html") if name in links},
    }


def update_entry(record: Record, state: str, date: str, author: Record) -> Record:
    """Return an activity "update" object: a snapshot of the pull request."""
    return {
        "description": record.get("description", ""),
        "title": record.get("title"),
        "destination": copy.deepcopy(record.get("destination")),
        "reason": record.get("reason", ""),
        "source": copy.deepcopy(record.get("source")),
        "state": state,
        "author": copy.deepcopy(author),
        "date": date,
    }


def participants(repository: Repository, pull_request_id: int) -> list[Record]:
    """Build Bitbucket's participants list: reviewers, commenters and reviewers who
    approved or requested changes. participated_on is the latest of those actions."""
    record = repository.pull_requests[pull_request_id]
    entries: dict[str, Record] = {}

    def entry_for(user: Record) -> Record:
        key = user_key(user)
        if key not in entries:
            entries[key] = {
                "type": "participant",
                "user": copy.deepcopy(user),
                "role": "PARTICIPANT",
                "approved": False,
                "state": None,
                "participated_on": None,
            }
        return entries[key]

    def participated(entry: Record, date: str) -> None:
        current = entry["participated_on"]
        if current is None or parse_time(date) > parse_time(current):
            entry["participated_on"] = date

    for reviewer in record.get("reviewers") or []:
        entry_for(reviewer)["role"] = "REVIEWER"
    for comment in repository.comments.get(pull_request_id, []):
        if isinstance(comment.get("user"), dict):
            participated(entry_for(comment["user"]), comment["created_on"])
    for review in repository.reviews.get(pull_request_id, {}).values():
        entry = entry_for(review.user)
        entry["approved"] = review.state == "approved"
        entry["state"] = review.state
        participated(entry, review.date)
    return list(entries.values())


def activity(
    repository: Repository, pull_request_ids: Iterable[int]
) -> list[ActivityEntry]:
    """Return the activity log of the given pull requests, newest first.

    Each update, comment and current review is one entry. Approvals that were taken
    back are not in the log, as on Bitbucket.
    """
    entries: list[ActivityEntry] = []
    for number in pull_request_ids:
        record = repository.pull_requests[number]
        ref = pull_request_ref(record)

        for index, update in enumerate(repository.updates.get(number, [])):
            entry = {"pull_request": ref, "update": update}
            entries.append(_activity(update["date"], "update", number, index, entry))

        for comment in repository.comments.get(number, []):
            entry = {"pull_request": ref, "comment": comment}
            entries.append(
                _activity(
                    comment["created_on"], "comment", number, comment["id"], entry
                )
            )

        for key, review in repository.reviews.get(number, {}).items():
            if review.state is None:
                continue
            kind = "approval" if review.state == "approved" else "changes_requested"
            payload = {"date": review.date, "user": review.user, "pullrequest": ref}
            entry = {"pull_request": ref, kind: payload}
            entries.append(_activity(review.date, kind, number, key, entry))

    entries.sort(key=lambda item: item.sort_key, reverse=True)
    return entries


def _activity(
    date: str, kind: str, number: int, identity: int | str, entry: Record
) -> ActivityEntry:
    """Key an entry by time, then kind, pull request and identity, so the order is
    total and a cursor can name a position in it."""
    moment = parse_time(date)
    microseconds = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    ident = f"{identity:020d}" if isinstance(identity, int) else identity
    return ActivityEntry((microseconds, kind, number, ident), entry)
