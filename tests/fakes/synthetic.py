"""Synthetic GitLab and Bitbucket datasets of any size, in the fixtures' shapes.

Every record starts as a copy of a record in tests/fixtures/ and gets its own ids,
times, people and links, so the agent reads it exactly as it reads the fixtures. The
datasets are built in memory and served by ``SyntheticGitLab`` and
``SyntheticBitbucket``, which are the fakes with these datasets in place of the
fixtures. They are read-only: the Bitbucket fake caches the views it derives.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes import bitbucket_data, gitlab_data
from tests.fakes.bitbucket import (
    LIST_LIMITS,
    PULL_REQUEST_LIMITS,
    FakeBitbucket,
    _RequestContext,
    paginate_activity,
)
from tests.fakes.bitbucket_data import API_ORIGIN, WEB_ORIGIN, ActivityEntry, Review
from tests.fakes.gitlab import FakeGitLab

Record = dict[str, Any]

GROUP = "bench"
WORKSPACE = "bench"
BASE_TIME = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
# GitLab's maximum per_page. Bitbucket's maximum pagelen per endpoint is in its fake.
GITLAB_PAGE = 100


@dataclass(frozen=True)
class Scale:
    """The size of each provider's dataset, per project or per merge request."""

    projects: int = 20
    merge_requests: int = 100
    commits: int = 5
    notes: int = 10
    pipelines: int = 2
    deployments: int = 50
    users: int = 50


def _sha(*parts: object) -> str:
    seed = "/".join(str(part) for part in parts).encode()
    return hashlib.sha1(seed, usedforsecurity=False).hexdigest()


def _uuid(*parts: object) -> str:
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts)))) + "}"


def _template(provider: str, name: str) -> Record:
    directory = (
        gitlab_data.DEFAULT_FIXTURES_DIR
        if provider == "gitlab"
        else bitbucket_data.DEFAULT_FIXTURES_DIR
    )
    records = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    return dict(records[0])


# -- GitLab ----------------------------------------------------------------------------


class _GitLabBuilder:
    """Builds GitLab projects whose records copy the fixtures' first record of each."""

    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.mr_template = _template("gitlab", "merge_requests")
        self.note_template = _template("gitlab", "merge_request_notes")
        self.commit_template = _template("gitlab", "merge_request_commits")
        self.pipeline_template = _template("gitlab", "pipeline_details")
        self.deployment_template = _template("gitlab", "deployments")
        self.users = [self._user(number) for number in range(scale.users)]

    @staticmethod
    def _user(number: int) -> Record:
        return {
            "id": 91_000_000 + number,
            "username": f"bench-user-{number}",
            "name": f"Bench User {number}",
            "state": "active",
            "avatar_url": None,
            "web_url": f"https://gitlab.example.com/bench-user-{number}",
        }

    def project(self, index: int) -> gitlab_data.Project:
        path = f"{GROUP}/project-{index:03d}"
        project = gitlab_data.Project(
            id=70_000_000 + index,
            path_with_namespace=path,
            created_at=gitlab_data.format_time(BASE_TIME - timedelta(days=1)),
        )
        for iid in range(1, self.scale.merge_requests + 1):
            self._add_merge_request(project, iid)
        for number in range(self.scale.deployments):
            deployment = self._deployment(project, number)
            project.deployments[deployment["id"]] = deployment
        return project

    def _time(self, project: gitlab_data.Project, iid: int, minutes: float) -> str:
        # Merge requests of one project start a minute apart, projects a second.
        offset = timedelta(minutes=iid + minutes, seconds=project.id % 1000)
        return gitlab_data.format_time(BASE_TIME + offset)

    def _add_merge_request(self, project: gitlab_data.Project, iid: int) -> None:
        mr_id = project.id * 100_000 + iid
        author = self.users[iid % len(self.users)]
        merger = self.users[(iid + 1) % len(self.users)]
        state = ("merged", "merged", "opened", "closed")[iid % 4]
        web_url = f"https://gitlab.example.com/{project.path_with_namespace}"
        merge_sha = _sha(project.id, iid, "merge")

        record = dict(self.mr_template)
        record.update(
            id=mr_id,
            iid=iid,
            project_id=project.id,
            source_project_id=project.id,
            target_project_id=project.id,
            title=f"Change {iid} of {project.path}",
            description="",
            state=state,
            created_at=self._time(project, iid, 0),
            updated_at=self._time(project, iid, 90),
            merged_at=self._time(project, iid, 90) if state == "merged" else None,
            closed_at=self._time(project, iid, 90) if state == "closed" else None,
            merged_by=merger if state == "merged" else None,
            merge_user=merger if state == "merged" else None,
            closed_by=merger if state == "closed" else None,
            author=author,
            source_branch=f"feature/change-{iid}",
            target_branch="main",
            sha=_sha(project.id, iid, "head"),
            merge_commit_sha=merge_sha if state == "merged" else None,
            squash_commit_sha=None,
            web_url=f"{web_url}/-/merge_requests/{iid}",
        )
        project.merge_requests[iid] = record

        project.commits[iid] = [
            self._commit(project, iid, number) for number in range(self.scale.commits)
        ]
        project.notes[iid] = [
            self._note(project, record, number) for number in range(self.scale.notes)
        ]
        for number in range(self.scale.pipelines):
            pipeline = self._pipeline(project, iid, number)
            project.pipeline_details[pipeline["id"]] = pipeline
            project.pipelines[pipeline["id"]] = gitlab_data.list_view_of_pipeline(
                pipeline
            )

    def _commit(self, project: gitlab_data.Project, iid: int, number: int) -> Record:
        sha = _sha(project.id, iid, "commit", number)
        author = self.users[(iid + number) % len(self.users)]
        when = self._time(project, iid, number - self.scale.commits)
        record = dict(self.commit_template)
        record.update(
            id=sha,
            short_id=sha[:8],
            created_at=when,
            title=f"Step {number} of change {iid}",
            message=f"Step {number} of change {iid}\n",
            author_name=author["name"],
            author_email=f"{author['username']}@example.com",
            authored_date=when,
            committer_name=author["name"],
            committer_email=f"{author['username']}@example.com",
            committed_date=when,
            web_url=f"https://gitlab.example.com/{project.path_with_namespace}"
            f"/-/commit/{sha}",
        )
        return record

    def _note(self, project: gitlab_data.Project, mr: Record, number: int) -> Record:
        # One approval note on every merged merge request, and a mix of comments,
        # diff comments and system notes.
        iid = mr["iid"]
        approval = number == 1 and mr["state"] == "merged"
        system = approval or number % 3 == 0
        body = "approved this merge request" if approval else f"note {number}"
        if system and not approval:
            body = "added 1 commit"
        when = self._time(project, iid, 1 + number * 80 / max(1, self.scale.notes))
        record = dict(self.note_template)
        record.update(
            id=mr["id"] * 100 + number,
            type="DiffNote" if not system and number % 2 else None,
            body=body,
            author=self.users[(iid + number + 2) % len(self.users)],
            created_at=when,
            updated_at=when,
            system=system,
            noteable_id=mr["id"],
            noteable_iid=iid,
        )
        return record

    def _pipeline(self, project: gitlab_data.Project, iid: int, number: int) -> Record:
        pipeline_id = project.id * 1_000_000 + iid * 10 + number
        started = self._time(project, iid, 2 + number * 30)
        web_url = f"https://gitlab.example.com/{project.path_with_namespace}"
        record = dict(self.pipeline_template)
        record.update(
            id=pipeline_id,
            iid=iid * 10 + number,
            project_id=project.id,
            sha=_sha(project.id, iid, "commit", number),
            ref=f"refs/merge-requests/{iid}/head",
            status="failed" if (iid + number) % 7 == 0 else "success",
            created_at=self._time(project, iid, 1 + number * 30),
            updated_at=self._time(project, iid, 20 + number * 30),
            started_at=started,
            finished_at=self._time(project, iid, 20 + number * 30),
            web_url=f"{web_url}/-/pipelines/{pipeline_id}",
            user=self.users[iid % len(self.users)],
        )
        return record

    def _deployment(self, project: gitlab_data.Project, number: int) -> Record:
        deployment_id = project.id * 10_000 + number
        # Deployments follow the merge requests, spread over the same period.
        iid = 1 + number * max(1, self.scale.merge_requests) // max(
            1, self.scale.deployments
        )
        created = self._time(project, iid, 100)
        finished = self._time(project, iid, 104)
        deployable = dict(self.deployment_template["deployable"])
        deployable.update(
            id=deployment_id,
            status="success",
            created_at=created,
            started_at=self._time(project, iid, 101),
            finished_at=finished,
        )
        record = dict(self.deployment_template)
        record.update(
            id=deployment_id,
            iid=number + 1,
            ref="main",
            sha=_sha(project.id, iid, "merge"),
            created_at=created,
            updated_at=finished,
            status="success",
            user=self.users[number % len(self.users)],
            deployable=deployable,
        )
        return record


def gitlab_dataset(scale: Scale) -> gitlab_data.Dataset:
    """Return ``scale.projects`` projects in the group ``bench``."""
    builder = _GitLabBuilder(scale)
    projects = [builder.project(index) for index in range(scale.projects)]
    created = gitlab_data.format_time(BASE_TIME - timedelta(days=30))
    groups = {GROUP: gitlab_data.Group(79_999_999, GROUP, created)}
    return gitlab_data.Dataset({project.id: project for project in projects}, groups)


class SyntheticGitLab(FakeGitLab):
    """The fake GitLab serving a synthetic dataset instead of the fixtures."""

    def __init__(self, dataset: gitlab_data.Dataset, **options: Any) -> None:
        super().__init__(**options)
        self._projects = dataset.projects
        self._groups = dataset.groups


def gitlab_minimum_requests(
    dataset: gitlab_data.Dataset, *, approvals: bool
) -> dict[str, int]:
    """Return the fewest requests per endpoint that a full sync of REST API v4 needs.

    Each project is looked up once, and every list needs at least one page of 100.
    Each merge request needs its commits, its notes and, when the instance has
    them, its approvals. Each pipeline needs a request of its own for its start and
    finish times, which the pipeline list leaves out.
    """
    minimum = {
        "project": 0,
        "merge_requests": 0,
        "merge_request_commits": 0,
        "merge_request_notes": 0,
        "merge_request_approvals": 0,
        "pipelines": 0,
        "pipeline": 0,
        "deployments": 0,
    }
    for project in dataset.projects.values():
        minimum["project"] += 1
        minimum["merge_requests"] += _pages(len(project.merge_requests), GITLAB_PAGE)
        for iid in project.merge_requests:
            commits = len(project.commits.get(iid, []))
            notes = len(project.notes.get(iid, []))
            minimum["merge_request_commits"] += _pages(commits, GITLAB_PAGE)
            minimum["merge_request_notes"] += _pages(notes, GITLAB_PAGE)
            minimum["merge_request_approvals"] += 1 if approvals else 0
        minimum["pipelines"] += _pages(len(project.pipelines), GITLAB_PAGE)
        minimum["pipeline"] += len(project.pipelines)
        minimum["deployments"] += _pages(len(project.deployments), GITLAB_PAGE)
    if not approvals and dataset.projects:
        # One request finds out that the instance has no approvals API.
        minimum["merge_request_approvals"] = 1
    return minimum


def _pages(items: int, page_size: int) -> int:
    return max(1, math.ceil(items / page_size))


# -- Bitbucket -------------------------------------------------------------------------


class _BitbucketBuilder:
    """Builds Bitbucket repositories whose records copy the fixtures' first records."""

    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.repository_template = _template("bitbucket", "repositories")
        self.comment_template = _template("bitbucket", "pull_request_comments")
        self.commit_template = _template("bitbucket", "pull_request_commits")
        self.pipeline_template = _template("bitbucket", "pipelines")
        self.deployment_template = _template("bitbucket", "deployments")
        self.users = [
            bitbucket_data.make_user(f"bench-{number}") for number in range(scale.users)
        ]
        self.workspace = {
            "type": "workspace",
            "uuid": _uuid("workspace", WORKSPACE),
            "name": "Bench",
            "slug": WORKSPACE,
            "links": {
                "html": {"href": f"{WEB_ORIGIN}/{WORKSPACE}/"},
                "self": {"href": f"{API_ORIGIN}/workspaces/{WORKSPACE}"},
            },
        }

    def repository(self, index: int) -> bitbucket_data.Repository:
        slug = f"repo-{index:03d}"
        full_name = f"{WORKSPACE}/{slug}"
        text = json.dumps(self.repository_template).replace(
            "user-38/user-38php", full_name
        )
        record = json.loads(text)
        record.update(
            name=slug,
            slug=slug,
            full_name=full_name,
            uuid=_uuid("repository", full_name),
            workspace=self.workspace,
            owner=self.users[0],
        )
        repository = bitbucket_data.Repository(record=record)
        for number in range(1, self.scale.merge_requests + 1):
            self._add_pull_request(repository, index, number)
        for number in range(self.scale.deployments):
            deployment = self._deployment(repository, index, number)
            repository.deployments[deployment["uuid"]] = deployment
        return repository

    @staticmethod
    def _time(index: int, number: int, minutes: float) -> str:
        offset = timedelta(minutes=number + minutes, seconds=index)
        return bitbucket_data.format_time(BASE_TIME + offset)

    def _add_pull_request(
        self, repository: bitbucket_data.Repository, index: int, number: int
    ) -> None:
        state = ("MERGED", "MERGED", "OPEN", "DECLINED")[number % 4]
        author = self.users[number % len(self.users)]
        closer = self.users[(number + 1) % len(self.users)]
        created = self._time(index, number, 0)
        closed = self._time(index, number, 90)

        record = self._pull_request(repository, number, state, author, created)
        record["updated_on"] = (
            closed if state != "OPEN" else self._time(index, number, 85)
        )
        repository.pull_requests[number] = record
        repository.updates[number] = [
            bitbucket_data.update_entry(record, "OPEN", created, author)
        ]
        if state != "OPEN":
            record["closed_by"] = closer
            repository.updates[number].append(
                bitbucket_data.update_entry(record, state, closed, closer)
            )

        if state == "MERGED":
            reviewer = self.users[(number + 3) % len(self.users)]
            approved = self._time(index, number, 80)
            repository.reviews[number] = {
                bitbucket_data.user_key(reviewer): Review(
                    reviewer, "approved", approved
                )
            }

        repository.comments[number] = [
            self._comment(repository, record, index, n) for n in range(self.scale.notes)
        ]
        repository.commits[number] = [
            self._commit(repository, index, number, n)
            for n in range(self.scale.commits)
        ]
        for n in range(self.scale.pipelines):
            pipeline = self._pipeline(index, number, n)
            repository.pipelines[pipeline["uuid"]] = pipeline

    @staticmethod
    def _pull_request(
        repository: bitbucket_data.Repository,
        number: int,
        state: str,
        author: Record,
        created: str,
    ) -> Record:
        full_name = repository.full_name
        base = f"{API_ORIGIN}/repositories/{full_name}/pullrequests/{number}"
        links: Record = {
            "self": {"href": base},
            "html": {"href": f"{WEB_ORIGIN}/{full_name}/pull-requests/{number}"},
        }
        for name in ("commits", "approve", "comments", "activity", "statuses"):
            links[name] = {"href": f"{base}/{name}"}
        source_hash = _sha(full_name, number, "head")[:12]
        return {
            "comment_count": 0,
            "task_count": 0,
            "type": "pullrequest",
            "id": number,
            "title": f"Change {number} of {repository.slug}",
            "description": "",
            "state": state,
            "merge_commit": (
                {"type": "commit", "hash": _sha(full_name, number, "merge")[:12]}
                if state == "MERGED"
                else None
            ),
            "close_source_branch": True,
            "closed_by": None,
            "author": author,
            "reason": "",
            "created_on": created,
            "destination": {
                "branch": {"name": "main"},
                "commit": {"type": "commit", "hash": _sha(full_name, "main")[:12]},
                "repository": {"type": "repository", "full_name": full_name},
            },
            "source": {
                "branch": {"name": f"feature/change-{number}"},
                "commit": {"type": "commit", "hash": source_hash},
                "repository": {"type": "repository", "full_name": full_name},
            },
            "reviewers": [],
            "links": links,
            "summary": {
                "type": "rendered",
                "raw": "",
                "markup": "markdown",
                "html": "",
            },
        }

    def _comment(
        self,
        repository: bitbucket_data.Repository,
        pull_request: Record,
        index: int,
        number: int,
    ) -> Record:
        comment_id = (index + 1) * 100_000_000 + pull_request["id"] * 100 + number
        when = self._time(index, pull_request["id"], 1 + number * 70 / self.scale.notes)
        base = pull_request["links"]["self"]["href"]
        html = pull_request["links"]["html"]["href"]
        record = dict(self.comment_template)
        record.update(
            id=comment_id,
            created_on=when,
            updated_on=when,
            content={"type": "rendered", "raw": "", "markup": "markdown", "html": ""},
            user=self.users[(pull_request["id"] + number + 2) % len(self.users)],
            inline={"from": None, "to": 3, "path": "README.md"} if number % 2 else None,
            links={
                "self": {"href": f"{base}/comments/{comment_id}"},
                "html": {"href": f"{html}/_/diff#comment-{comment_id}"},
            },
            pullrequest=bitbucket_data.pull_request_ref(pull_request),
        )
        if record["inline"] is None:
            del record["inline"]
        return record

    def _commit(
        self, repository: bitbucket_data.Repository, index: int, pr: int, number: int
    ) -> Record:
        sha = _sha(repository.full_name, pr, "commit", number)
        author = self.users[(pr + number) % len(self.users)]
        record = dict(self.commit_template)
        record.update(
            hash=sha,
            date=self._time(index, pr, number - self.scale.commits),
            # The agent requests these user fields with `fields=`, so Bitbucket
            # returns them, unlike in the fixture, which was requested without.
            author={
                "raw": f"{author['display_name']} <{author['nickname']}@example.com>",
                "user": {
                    key: author[key]
                    for key in ("account_id", "uuid", "nickname", "display_name")
                },
            },
            message=f"Step {number} of change {pr}\n",
            links={
                "self": {
                    "href": f"{API_ORIGIN}/repositories/{repository.full_name}"
                    f"/commit/{sha}"
                }
            },
        )
        return record

    def _pipeline(self, index: int, pr: int, number: int) -> Record:
        result = "FAILED" if (pr + number) % 7 == 0 else "SUCCESSFUL"
        record = dict(self.pipeline_template)
        record.update(
            uuid=_uuid("pipeline", index, pr, number),
            state={
                "name": "COMPLETED",
                "result": {
                    "name": result,
                    "type": f"pipeline_state_completed_{result.lower()}",
                },
            },
            created_on=self._time(index, pr, 1 + number * 30),
            completed_on=self._time(index, pr, 20 + number * 30),
            target={
                "ref_name": f"feature/change-{pr}",
                "commit": {"hash": _sha(index, pr, "commit", number)},
            },
            duration_in_seconds=1140,
            build_number=pr * 10 + number,
        )
        return record

    def _deployment(
        self, repository: bitbucket_data.Repository, index: int, number: int
    ) -> Record:
        pr = 1 + number * max(1, self.scale.merge_requests) // max(
            1, self.scale.deployments
        )
        started = self._time(index, pr, 101)
        completed = self._time(index, pr, 104)
        record = copy.deepcopy(self.deployment_template)
        record.update(
            uuid=_uuid("deployment", repository.full_name, number),
            last_update_time=completed,
        )
        record["state"].update(started_on=started, completed_on=completed)
        record["release"]["created_on"] = self._time(index, pr, 100)
        record["release"]["commit"]["hash"] = _sha(repository.full_name, pr, "merge")
        return record


def bitbucket_dataset(scale: Scale) -> bitbucket_data.Dataset:
    """Return ``scale.projects`` repositories in the workspace ``bench``."""
    builder = _BitbucketBuilder(scale)
    repositories = [builder.repository(index) for index in range(scale.projects)]
    users = {bitbucket_data.user_key(user): user for user in builder.users}
    return bitbucket_data.Dataset(
        {repository.full_name: repository for repository in repositories},
        {WORKSPACE: builder.workspace},
        users,
    )


class SyntheticBitbucket(FakeBitbucket):
    """The fake Bitbucket serving a synthetic dataset instead of the fixtures.

    The activity log and the pull request objects are derived once per repository
    and pull request instead of on every request, which keeps a log of tens of
    thousands of entries cheap to page through. That is correct only while the
    dataset does not change, so the mutation helpers must not be used.
    """

    def __init__(self, dataset: bitbucket_data.Dataset, **options: Any) -> None:
        super().__init__(**options)
        self._repositories = dataset.repositories
        self._workspaces = dataset.workspaces
        self._users = dataset.users
        self._activity: dict[str, list[ActivityEntry]] = {}
        self._pull_request_objects: dict[tuple[str, int], Record] = {}

    def _list_repository_activity(
        self, context: _RequestContext, workspace: str, slug: str
    ) -> tuple[Record, tuple[str, ...]]:
        repository = self._repository_or_404(workspace, slug)
        entries = self._activity.get(repository.full_name)
        if entries is None:
            entries = bitbucket_data.activity(
                repository, list(repository.pull_requests)
            )
            self._activity[repository.full_name] = entries
        return paginate_activity(entries, context), ()

    def _pull_request_json(
        self, repository: bitbucket_data.Repository, record: Record
    ) -> Record:
        key = (repository.full_name, record["id"])
        cached = self._pull_request_objects.get(key)
        if cached is None:
            cached = super()._pull_request_json(repository, record)
            self._pull_request_objects[key] = cached
        return cached


def bitbucket_minimum_requests(dataset: bitbucket_data.Dataset) -> dict[str, int]:
    """Return the fewest requests per endpoint that a full sync of API 2.0 needs.

    The workspace's repository list gives every repository. The pull request list
    and the activity log are read at their maximum of 50 per page, the other lists
    at 100, and each pull request needs a commit list of its own.
    """
    minimum = {
        "repositories": _pages(len(dataset.repositories), LIST_LIMITS.maximum),
        "pullrequests": 0,
        "pullrequest_commits": 0,
        "pullrequests_activity": 0,
        "pipelines": 0,
        "deployments": 0,
    }
    page = PULL_REQUEST_LIMITS.maximum
    for repository in dataset.repositories.values():
        pull_requests = list(repository.pull_requests)
        entries = len(bitbucket_data.activity(repository, pull_requests))
        minimum["pullrequests"] += _pages(len(pull_requests), page)
        minimum["pullrequests_activity"] += _pages(entries, page)
        for number in pull_requests:
            commits = len(repository.commits.get(number, []))
            minimum["pullrequest_commits"] += _pages(commits, LIST_LIMITS.maximum)
        minimum["pipelines"] += _pages(len(repository.pipelines), LIST_LIMITS.maximum)
        minimum["deployments"] += _pages(
            len(repository.deployments), LIST_LIMITS.maximum
        )
    return minimum
