"""Load the recorded GitLab fixtures into projects and groups for the fake GitLab.

The fixtures use the placeholder project id 12345678 for three real projects (see
tests/fixtures/README.md). The loader assigns each record to a project by the path in
its web_url and gives the two CI projects ids of their own.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Record = dict[str, Any]

DEFAULT_FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "gitlab"

SNOWFLAKE_SPEND = "gitlab-data/snowflake_spend"
CHARTS = "merico-dev/ee/charts"
VDEV_CO = "merico-dev/ee/vdev.co"

PROJECT_IDS = {SNOWFLAKE_SPEND: 12345678, CHARTS: 12345679, VDEV_CO: 12345680}

# 4347861 is the gitlab-data group id that the milestones in the fixtures carry. The
# merico-dev ids are made up.
GROUP_IDS = {"gitlab-data": 4347861, "merico-dev": 12345690, "merico-dev/ee": 12345691}

MERGE_REQUEST_FILES = (
    "merge_requests.json",
    "merge_requests_for_mr_commit_test.json",
    "merge_requests_for_mr_notes_test.json",
)

# The keys GitLab returns for a pipeline in a list. The single-pipeline endpoint adds
# timing, user and status details.
PIPELINE_LIST_KEYS = (
    "id",
    "iid",
    "project_id",
    "sha",
    "ref",
    "status",
    "source",
    "created_at",
    "updated_at",
    "web_url",
)

_MERGE_REQUEST_IID = re.compile(r"/merge_requests/(\d+)/")


@dataclass
class Group:
    """A GitLab group, keyed by its full_path such as merico-dev/ee."""

    id: int
    full_path: str
    created_at: str

    @property
    def path(self) -> str:
        return self.full_path.rsplit("/", 1)[-1]

    @property
    def parent_path(self) -> str | None:
        if "/" not in self.full_path:
            return None
        return self.full_path.rsplit("/", 1)[0]


@dataclass
class Project:
    """A project with its merge requests and CI records, keyed as GitLab keys them."""

    id: int
    path_with_namespace: str
    created_at: str = "2019-01-01T00:00:00.000Z"
    merge_requests: dict[int, Record] = field(default_factory=dict)
    notes: dict[int, list[Record]] = field(default_factory=dict)
    commits: dict[int, list[Record]] = field(default_factory=dict)
    pipelines: dict[int, Record] = field(default_factory=dict)
    pipeline_details: dict[int, Record] = field(default_factory=dict)
    deployments: dict[int, Record] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]

    @property
    def namespace_path(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[0]

    def last_activity_at(self) -> str:
        """Return the latest updated_at (or created_at) of the project's records."""
        records: list[Record] = [
            *self.merge_requests.values(),
            *self.pipelines.values(),
            *self.deployments.values(),
        ]
        if not records:
            return self.created_at
        latest = max(effective_time(record, "updated_at") for record in records)
        return format_time(latest)


@dataclass
class Dataset:
    """All projects and groups the fake serves."""

    projects: dict[int, Project]
    groups: dict[str, Group]


def parse_time(value: str) -> datetime:
    """Parse a GitLab or query timestamp; a value without a zone is taken as UTC."""
    parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_time(value: datetime) -> str:
    """Format like GitLab: UTC with milliseconds and a Z."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"


def effective_time(record: Record, key: str) -> datetime:
    """Return record[key] as a datetime, falling back to created_at when it is null.

    Two pipelines and one deployment in the fixtures have no updated_at.
    """
    value = record.get(key) or record.get("created_at")
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return parse_time(str(value))


def project_path_from_web_url(web_url: str) -> str:
    """Return the project path of a GitLab web URL, the part before /-/."""
    path = web_url.split("://", 1)[-1].split("/", 1)[1]
    return path.split("/-/", 1)[0]


def load_dataset(fixtures_dir: Path = DEFAULT_FIXTURES_DIR) -> Dataset:
    """Return a fresh, mutable copy of the dataset for one fake GitLab."""
    return copy.deepcopy(_load_cached(fixtures_dir.resolve()))


@functools.lru_cache(maxsize=4)
def _load_cached(fixtures_dir: Path) -> Dataset:
    projects = {
        path: Project(id=project_id, path_with_namespace=path)
        for path, project_id in PROJECT_IDS.items()
    }

    _load_merge_requests(fixtures_dir, projects)
    _load_merge_request_children(fixtures_dir, projects)
    _load_ci(fixtures_dir, projects)

    for project in projects.values():
        project.created_at = _earliest_created_at(project)

    groups = {
        path: Group(GROUP_IDS[path], path, "2018-01-01T00:00:00.000Z")
        for path in GROUP_IDS
    }
    return Dataset({project.id: project for project in projects.values()}, groups)


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


def _load_merge_requests(fixtures_dir: Path, projects: dict[str, Project]) -> None:
    """Merge the three captures of the merge request list, de-duplicated by id."""
    seen: set[int] = set()
    for name in MERGE_REQUEST_FILES:
        for record in _read_json(fixtures_dir, name):
            if record["id"] in seen:
                continue
            seen.add(record["id"])
            project = projects[project_path_from_web_url(record["web_url"])]
            project.merge_requests[record["iid"]] = record


def _load_merge_request_children(
    fixtures_dir: Path, projects: dict[str, Project]
) -> None:
    """Attach notes and commits to merge requests by the iid in their request URL."""
    project = projects[SNOWFLAKE_SPEND]
    for name, target in (
        ("merge_request_notes", project.notes),
        ("merge_request_commits", project.commits),
    ):
        records = _read_json(fixtures_dir, f"{name}.json")
        urls = _read_urls(fixtures_dir, f"{name}.urls.txt", len(records))
        for record, url in zip(records, urls, strict=True):
            match = _MERGE_REQUEST_IID.search(url)
            if match is None:
                raise ValueError(f"{name}.urls.txt: no merge request iid in {url}")
            target.setdefault(int(match.group(1)), []).append(record)


def _load_ci(fixtures_dir: Path, projects: dict[str, Project]) -> None:
    """Load pipelines and deployments, rewriting project_id to the project's own id."""
    for record in _read_json(fixtures_dir, "pipelines.json"):
        project = projects[project_path_from_web_url(record["web_url"])]
        record["project_id"] = project.id
        project.pipelines[record["id"]] = record

    for record in _read_json(fixtures_dir, "pipeline_details.json"):
        project = projects[project_path_from_web_url(record["web_url"])]
        record["project_id"] = project.id
        project.pipeline_details[record["id"]] = record
        project.pipelines.setdefault(record["id"], list_view_of_pipeline(record))

    for record in _read_json(fixtures_dir, "deployments.json"):
        project = projects[project_path_from_web_url(record["deployable"]["web_url"])]
        pipeline = record["deployable"].get("pipeline")
        if isinstance(pipeline, dict):
            pipeline["project_id"] = project.id
        project.deployments[record["id"]] = record


def list_view_of_pipeline(record: Record) -> Record:
    """Return the fields GitLab's pipeline list shows for a pipeline."""
    return {key: record.get(key) for key in PIPELINE_LIST_KEYS}


def _earliest_created_at(project: Project) -> str:
    records: list[Record] = [
        *project.merge_requests.values(),
        *project.pipelines.values(),
        *project.deployments.values(),
    ]
    if not records:
        return project.created_at
    return format_time(min(parse_time(record["created_at"]) for record in records))
