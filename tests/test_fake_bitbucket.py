"""Tests for the fake Bitbucket Cloud REST API 2.0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.bitbucket_data import parse_time

REPO = "repositories/user-38/user-38php"
ALL_STATES = ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]
# Comments per pull request, from pull_request_comments.urls.txt.
COMMENTS_PER_PULL_REQUEST = {
    31: 3,
    38: 2,
    40: 1,
    41: 1,
    42: 2,
    44: 2,
    51: 2,
    54: 3,
    57: 2,
}


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def session(fake_bitbucket: FakeBitbucket) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {fake_bitbucket.token}"
        yield client


def get_pages(
    client: requests.Session, url: str, **params: Any
) -> list[dict[str, Any]]:
    """Follow each page's next URL to the end and return every page body."""
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    next_params: dict[str, Any] | None = params
    while next_url:
        response = client.get(next_url, params=next_params, timeout=10)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = pages[-1].get("next")
        next_params = None
    return pages


def get_all(client: requests.Session, url: str, **params: Any) -> list[dict[str, Any]]:
    return [
        value for page in get_pages(client, url, **params) for value in page["values"]
    ]


def activity_kind(entry: dict[str, Any]) -> str:
    [kind] = [key for key in entry if key != "pull_request"]
    return kind


def activity_time(entry: dict[str, Any]) -> datetime:
    kind = activity_kind(entry)
    payload = entry[kind]
    return parse_time(payload["created_on"] if kind == "comment" else payload["date"])


# -- data served ---------------------------------------------------------------------


def test_serves_fixture_counts(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    api = fake_bitbucket.url
    repositories = get_all(session, f"{api}/repositories/user-38")
    assert [r["full_name"] for r in repositories] == ["user-38/user-38php"]

    pulls = get_all(session, f"{api}/{REPO}/pullrequests", state=ALL_STATES, pagelen=50)
    assert len(pulls) == 57
    assert Counter(p["state"] for p in pulls) == {"OPEN": 30, "MERGED": 27}

    for number, expected in COMMENTS_PER_PULL_REQUEST.items():
        url = f"{api}/{REPO}/pullrequests/{number}/comments"
        assert len(get_all(session, url)) == expected, number
    assert get_all(session, f"{api}/{REPO}/pullrequests/1/comments") == []

    commits = get_all(session, f"{api}/{REPO}/pullrequests/3/commits")
    assert len(commits) == 8
    assert get_all(session, f"{api}/{REPO}/pullrequests/40/commits") == []

    pipelines = get_all(session, f"{api}/{REPO}/pipelines/")
    assert len(pipelines) == 22
    steps = [
        step
        for pipeline in pipelines
        for step in get_all(
            session, f"{api}/{REPO}/pipelines/{pipeline['uuid']}/steps/"
        )
    ]
    assert len(steps) == 35
    assert len(get_all(session, f"{api}/{REPO}/deployments/")) == 27

    activity = get_all(session, f"{api}/{REPO}/pullrequests/activity", pagelen=50)
    assert Counter(activity_kind(entry) for entry in activity) == {
        "update": 57,
        "comment": 18,
    }


def test_repository_links_point_at_fake(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    response = session.get(f"{fake_bitbucket.url}/{REPO}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    repository = response.json()
    web = f"{fake_bitbucket.web_url}/user-38/user-38php"
    assert repository["links"]["html"]["href"] == web
    assert repository["links"]["self"]["href"] == f"{fake_bitbucket.url}/{REPO}"
    assert repository["uuid"] == "{e762bff4-f795-49c6-b9f9-6ea334b6d964}"
    assert fake_bitbucket.repository_url() == web
    clone = {link["name"]: link["href"] for link in repository["links"]["clone"]}
    assert clone["https"].endswith(
        f"@127.0.0.1:{fake_bitbucket.port}/user-38/user-38php.git"
    )
    assert "RateLimit-Limit" not in response.headers

    user = session.get(f"{fake_bitbucket.url}/user", timeout=10).json()
    assert user["nickname"] == "mhq-agent-bot"


def test_pipeline_paths_with_and_without_slash(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}"
    with_slash = session.get(f"{base}/pipelines/", timeout=10)
    without = session.get(f"{base}/pipelines", timeout=10)
    assert with_slash.json()["values"] == without.json()["values"]
    assert with_slash.json()["next"].endswith("/pipelines/?page=2")

    uuid = "{d7bf8394-6e18-42c4-b3a3-70514fc4079f}"
    encoded = uuid.replace("{", "%7B").replace("}", "%7D")
    steps = session.get(f"{base}/pipelines/{encoded}/steps/", timeout=10).json()
    assert steps["size"] == 13
    assert steps["pagelen"] == 10
    missing = session.get(f"{base}/pipelines/%7Bnone%7D/steps/", timeout=10)
    assert missing.status_code == 404


# -- pagination ----------------------------------------------------------------------


def test_pagination_next_until_last_page(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    pages = get_pages(session, url, state=ALL_STATES)

    assert len(pages) == 6
    assert [page["page"] for page in pages] == [1, 2, 3, 4, 5, 6]
    assert all(page["size"] == 57 for page in pages)
    assert all(page["pagelen"] == 10 for page in pages)
    assert all("next" in page for page in pages[:-1])
    assert "next" not in pages[-1]
    assert len(pages[-1]["values"]) == 7
    ids = [value["id"] for page in pages for value in page["values"]]
    assert sorted(ids) == list(range(1, 58))


def test_next_url_keeps_query_encoded(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    q = 'updated_on >= "2022-08-12T15:03:00+00:00" AND state = "MERGED"'
    fields = "+values.participants,-values.links"
    params: dict[str, Any] = {
        "state": ["OPEN", "MERGED"],
        "q": q,
        "fields": fields,
        "pagelen": 5,
    }
    first = session.get(url, params=params, timeout=10).json()

    next_url = first["next"]
    assert next_url.startswith(f"{fake_bitbucket.url}/{REPO}/pullrequests?")
    assert "+" not in urlsplit(next_url).query
    query = parse_qs(urlsplit(next_url).query)
    assert query == {
        "state": ["OPEN", "MERGED"],
        "q": [q],
        "fields": [fields],
        "pagelen": ["5"],
        "page": ["2"],
    }
    second = session.get(next_url, timeout=10).json()
    assert second["page"] == 2
    assert "participants" in second["values"][0]
    assert "links" not in second["values"][0]


def test_pagelen_is_capped(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}"
    merged: dict[str, Any] = {"state": "MERGED", "pagelen": 100}
    pulls = session.get(f"{base}/pullrequests", params=merged, timeout=10).json()
    assert pulls["pagelen"] == 50
    pipelines = session.get(f"{base}/pipelines/", params={"pagelen": 500}, timeout=10)
    assert pipelines.json()["pagelen"] == 100
    activity = session.get(
        f"{base}/pullrequests/activity", params={"pagelen": 80}, timeout=10
    ).json()
    assert activity["pagelen"] == 50


def test_page_past_end_is_404(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    response = session.get(url, params={"page": 9}, timeout=10)
    assert response.status_code == 404
    assert response.json() == {"type": "error", "error": {"message": "Invalid page"}}
    invalid = session.get(url, params={"pagelen": "many"}, timeout=10)
    assert invalid.status_code == 400


# -- pull request filters ------------------------------------------------------------


def test_pull_request_state_filter(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"

    default = get_all(session, url)
    assert len(default) == 30
    assert {p["state"] for p in default} == {"OPEN"}

    merged = get_all(session, url, state="MERGED")
    assert len(merged) == 27
    assert {p["state"] for p in merged} == {"MERGED"}
    assert get_all(session, url, state="DECLINED") == []
    assert len(get_all(session, url, state=["OPEN", "MERGED"])) == 57

    invalid = session.get(url, params={"state": "CLOSED"}, timeout=10)
    assert invalid.status_code == 400
    assert invalid.json()["type"] == "error"


def test_pull_request_q_on_updated_on(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    every = get_all(session, url, state=ALL_STATES)
    pivot = sorted(p["updated_on"] for p in every)[40]

    after = get_all(session, url, state=ALL_STATES, q=f'updated_on > "{pivot}"')
    assert len(after) == 16
    assert all(parse_time(p["updated_on"]) > parse_time(pivot) for p in after)
    at_or_after = get_all(session, url, state=ALL_STATES, q=f'updated_on >= "{pivot}"')
    assert len(at_or_after) == 17

    unquoted = get_all(session, url, state=ALL_STATES, q=f"updated_on > {pivot}")
    assert len(unquoted) == 16
    combined = get_all(
        session, url, q='updated_on >= "2022-08-12T00:00:00Z" AND state = "MERGED"'
    )
    assert len(combined) == 27
    assert {p["state"] for p in combined} == {"MERGED"}

    invalid = session.get(url, params={"q": "updated_on >"}, timeout=10)
    assert invalid.status_code == 400


def test_pull_request_sort(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"

    def ids(sort: str) -> list[int]:
        return [p["id"] for p in get_all(session, url, state=ALL_STATES, sort=sort)]

    def times(sort: str, key: str) -> list[datetime]:
        pulls = get_all(session, url, state=ALL_STATES, sort=sort)
        return [parse_time(p[key]) for p in pulls]

    assert ids("id") == list(range(1, 58))
    assert times("updated_on", "updated_on") == sorted(
        times("updated_on", "updated_on")
    )
    newest_first = times("-updated_on", "updated_on")
    assert newest_first == sorted(newest_first, reverse=True)
    created = times("-created_on", "created_on")
    assert created == sorted(created, reverse=True)
    assert times("created_on", "created_on") == sorted(created)
    invalid = session.get(url, params={"sort": "title"}, timeout=10)
    assert invalid.status_code == 400


def test_pipelines_and_deployments_sort(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}"
    pipelines = get_all(session, f"{base}/pipelines/", sort="-created_on")
    created = [parse_time(p["created_on"]) for p in pipelines]
    assert created == sorted(created, reverse=True)

    in_fixture_order = get_all(session, f"{base}/deployments/", pagelen=100)
    assert in_fixture_order[0]["uuid"] == "{fcb46cbc-8733-5264-b362-c05a8f9eb2f8}"
    newest = get_all(session, f"{base}/deployments/", sort="-last_update_time")
    with_time = [d["last_update_time"] for d in newest if "last_update_time" in d]
    assert [parse_time(t) for t in with_time] == sorted(
        (parse_time(t) for t in with_time), reverse=True
    )
    assert all("last_update_time" not in d for d in newest[-3:])


# -- fields --------------------------------------------------------------------------


def test_list_objects_are_partial(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    listed = session.get(url, timeout=10).json()["values"][0]
    assert "participants" not in listed
    assert "reviewers" not in listed
    assert "title" in listed

    single = session.get(f"{url}/{listed['id']}", timeout=10).json()
    assert single["reviewers"] == []
    assert isinstance(single["participants"], list)


def test_fields_add_participants(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    params: dict[str, Any] = {
        "fields": "+values.participants,+values.reviewers",
        "pagelen": 50,
    }
    pulls = {
        p["id"]: p for p in session.get(url, params=params, timeout=10).json()["values"]
    }

    assert "title" in pulls[31]
    assert pulls[31]["reviewers"] == []
    [participant] = pulls[31]["participants"]
    assert participant["type"] == "participant"
    assert participant["user"]["nickname"] == "user-38"
    assert participant["role"] == "PARTICIPANT"
    assert participant["approved"] is False
    assert participant["state"] is None
    assert participant["participated_on"] is not None
    assert pulls[30]["participants"] == []


def test_fields_restrict_and_remove(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    restricted = session.get(
        url, params={"fields": "values.id,values.updated_on,next,page"}, timeout=10
    ).json()
    assert set(restricted) == {"values", "next", "page"}
    assert all(set(value) == {"id", "updated_on"} for value in restricted["values"])

    nested = session.get(
        url, params={"fields": "values.id,values.author.nickname"}, timeout=10
    ).json()
    assert set(nested) == {"values"}
    assert nested["values"][0]["author"] == {"nickname": "user-38"}

    removed = session.get(url, params={"fields": "-values.links,-size"}, timeout=10)
    body = removed.json()
    assert "size" not in body
    assert "next" in body
    assert "links" not in body["values"][0]
    assert "title" in body["values"][0]

    with_participants = session.get(
        url, params={"fields": "values.id,values.participants"}, timeout=10
    ).json()
    assert set(with_participants["values"][0]) == {"id", "participants"}


def test_fields_plus_sent_unencoded(fake_bitbucket: FakeBitbucket) -> None:
    # A literal "+" in a query string decodes to a space, which still adds the field.
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests?fields=+values.participants"
    headers = {"Authorization": f"Bearer {fake_bitbucket.token}"}
    body = requests.get(url, headers=headers, timeout=10).json()
    assert "participants" in body["values"][0]
    assert "title" in body["values"][0]


# -- activity ------------------------------------------------------------------------


def test_activity_newest_first_without_totals(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests/activity"
    pages = get_pages(session, url)

    assert len(pages) == 8
    assert all(set(page) <= {"values", "pagelen", "next"} for page in pages)
    assert all("next" in page for page in pages[:-1])
    assert "ctx=" in pages[0]["next"]
    entries = [entry for page in pages for entry in page["values"]]
    assert len(entries) == 75
    times = [activity_time(entry) for entry in entries]
    assert times == sorted(times, reverse=True)

    update = next(e for e in entries if activity_kind(e) == "update")
    assert update["update"]["state"] == "OPEN"
    assert update["update"]["author"]["nickname"] == "user-38"
    assert set(update["update"]) >= {"title", "source", "destination", "reason", "date"}
    assert set(update["pull_request"]) == {"type", "id", "title", "links"}
    comment = next(e for e in entries if activity_kind(e) == "comment")
    assert comment["comment"]["type"] == "pullrequest_comment"


def test_activity_of_one_pull_request(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests/31/activity"
    entries = get_all(session, url)
    assert [activity_kind(e) for e in entries] == [
        "comment",
        "comment",
        "comment",
        "update",
    ]
    assert {e["pull_request"]["id"] for e in entries} == {31}


def test_activity_cursor_survives_new_entries(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests/activity"
    first = session.get(url, timeout=10).json()
    fake_bitbucket.add_comment(40, {"content": {"raw": "late"}})
    rest = get_all(session, first["next"])

    served = first["values"] + rest
    assert len(served) == 75
    keys = [
        (activity_kind(e), e["pull_request"]["id"], str(activity_time(e)))
        for e in served
    ]
    assert len(set(keys)) == 75
    assert len(get_all(session, url)) == 76


def test_approvals_in_participants_and_activity(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    updated_before = session.get(f"{base}/40", timeout=10).json()["updated_on"]
    fake_bitbucket.approve(40, "user-40", date="2022-08-15T10:00:00.000000+00:00")
    fake_bitbucket.request_changes(40, "user-41")

    pull = session.get(f"{base}/40", timeout=10).json()
    assert pull["updated_on"] == updated_before
    by_name = {p["user"]["nickname"]: p for p in pull["participants"]}
    assert by_name["user-40"]["approved"] is True
    assert by_name["user-40"]["state"] == "approved"
    assert by_name["user-40"]["participated_on"] == "2022-08-15T10:00:00.000000+00:00"
    assert (
        by_name["user-40"]["user"]["uuid"] == "{00000000-0000-4000-8000-000000000040}"
    )
    assert by_name["user-41"]["approved"] is False
    assert by_name["user-41"]["state"] == "changes_requested"

    activity = get_all(session, f"{base}/40/activity")
    kinds = [activity_kind(e) for e in activity]
    assert kinds[0] == "changes_requested"
    assert Counter(kinds) == {
        "update": 1,
        "comment": 1,
        "approval": 1,
        "changes_requested": 1,
    }
    approval = next(e["approval"] for e in activity if "approval" in e)
    assert approval["user"]["nickname"] == "user-40"
    assert approval["date"] == "2022-08-15T10:00:00.000000+00:00"
    assert approval["pullrequest"]["id"] == 40

    fake_bitbucket.unapprove(40, "user-40")
    pull = session.get(f"{base}/40", timeout=10).json()
    by_name = {p["user"]["nickname"]: p for p in pull["participants"]}
    assert by_name["user-40"]["approved"] is False
    assert by_name["user-40"]["state"] is None
    kinds = [activity_kind(e) for e in get_all(session, f"{base}/40/activity")]
    assert "approval" not in kinds
    repository_log = get_all(session, f"{base}/activity", pagelen=50)
    assert not any("approval" in e for e in repository_log)
    with pytest.raises(KeyError):
        fake_bitbucket.unapprove(40, "user-40")


def test_merge_and_decline_add_updates(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    fake_bitbucket.merge(40, "user-40")
    fake_bitbucket.decline(41, "user-38", reason="not needed")

    merged = session.get(f"{base}/40", timeout=10).json()
    assert merged["state"] == "MERGED"
    assert merged["closed_by"]["nickname"] == "user-40"
    assert len(merged["merge_commit"]["hash"]) == 12
    declined = session.get(f"{base}/41", timeout=10).json()
    assert declined["state"] == "DECLINED"
    assert declined["reason"] == "not needed"
    assert len(get_all(session, base, state="DECLINED")) == 1

    newest = session.get(f"{base}/activity", timeout=10).json()["values"][:2]
    assert [e["update"]["state"] for e in newest] == ["DECLINED", "MERGED"]
    assert newest[1]["update"]["author"]["nickname"] == "user-40"
    with pytest.raises(ValueError, match="not OPEN"):
        fake_bitbucket.merge(40, "user-40")


def test_mutations_bump_updated_on(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    base = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    started = datetime.now(UTC)

    comment = fake_bitbucket.add_comment(40, {"content": {"raw": "looks good"}})
    assert comment["links"]["self"]["href"].startswith(fake_bitbucket.url)
    pull = session.get(f"{base}/40", timeout=10).json()
    assert pull["updated_on"] == comment["created_on"]
    assert parse_time(pull["updated_on"]) >= started
    comments = get_all(session, f"{base}/40/comments")
    assert comments[-1]["content"]["raw"] == "looks good"

    fake_bitbucket.update_pull_request(30, title="Renamed")
    renamed = get_all(session, base, q=f'updated_on >= "{started.isoformat()}"')
    assert {p["id"] for p in renamed} == {30, 40}

    added = fake_bitbucket.add_pull_request({"title": "New work"})
    assert added["id"] == 58
    assert session.get(f"{base}/58", timeout=10).json()["title"] == "New work"
    assert len(get_all(session, f"{base}/58/activity")) == 1

    pipeline = fake_bitbucket.add_pipeline({"state": {"name": "PENDING"}})
    pipelines = get_all(session, f"{fake_bitbucket.url}/{REPO}/pipelines/")
    assert pipelines[-1]["uuid"] == pipeline["uuid"]
    deployment = fake_bitbucket.add_deployment({"state": {"name": "COMPLETED"}})
    deployments = get_all(session, f"{fake_bitbucket.url}/{REPO}/deployments/")
    assert deployments[-1]["uuid"] == deployment["uuid"]


def test_deleted_repository_is_404(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    fake_bitbucket.delete_repository("user-38/user-38php")
    response = session.get(f"{fake_bitbucket.url}/{REPO}/pullrequests", timeout=10)
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    listing = session.get(f"{fake_bitbucket.url}/repositories/user-38", timeout=10)
    assert listing.json()["values"] == []


def test_unknown_path_is_404(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    response = session.get(f"{fake_bitbucket.url}/nothing/here", timeout=10)
    assert response.status_code == 404
    assert response.json() == {
        "type": "error",
        "error": {"message": "Resource not found"},
    }
    missing = session.get(f"{fake_bitbucket.url}/{REPO}/pullrequests/999", timeout=10)
    assert missing.status_code == 404


# -- auth, scopes and rate limit -----------------------------------------------------


def test_auth_rejects_bad_tokens(fake_bitbucket: FakeBitbucket) -> None:
    url = f"{fake_bitbucket.url}/{REPO}"
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"type": "error", "error": {"message": "Unauthorized"}}

    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Access token expired."
    basic = requests.get(url, auth=("user", fake_bitbucket.token), timeout=10)
    assert basic.status_code == 401

    old = {"Authorization": f"Bearer {fake_bitbucket.token}"}
    assert requests.get(url, headers=old, timeout=10).status_code == 200
    fake_bitbucket.set_token("bb-rotated")
    assert requests.get(url, headers=old, timeout=10).status_code == 401
    new = {"Authorization": "Bearer bb-rotated"}
    assert requests.get(url, headers=new, timeout=10).status_code == 200


def test_missing_scope_is_403() -> None:
    with (
        FakeBitbucket(scopes=("repository",)) as bitbucket,
        requests.Session() as client,
    ):
        client.headers["Authorization"] = f"Bearer {bitbucket.token}"
        assert client.get(f"{bitbucket.url}/{REPO}", timeout=10).status_code == 200

        pulls = client.get(f"{bitbucket.url}/{REPO}/pullrequests", timeout=10)
        assert pulls.status_code == 403
        assert pulls.json() == {
            "type": "error",
            "error": {
                "message": "Your credentials lack one or more required privilege "
                "scopes.",
                "detail": {"granted": ["repository"], "required": ["pullrequest"]},
            },
        }
        deployments = client.get(f"{bitbucket.url}/{REPO}/deployments/", timeout=10)
        assert deployments.status_code == 403
        assert deployments.json()["error"]["detail"]["required"] == ["pipeline"]

        bitbucket.set_scopes(["pullrequest"])
        repository = client.get(f"{bitbucket.url}/{REPO}", timeout=10)
        assert repository.status_code == 403
        assert repository.json()["error"]["detail"]["required"] == ["repository"]


def test_rate_limit_after_hourly_budget() -> None:
    with (
        FakeBitbucket(rate_limit_per_hour=3) as bitbucket,
        requests.Session() as client,
    ):
        client.headers["Authorization"] = f"Bearer {bitbucket.token}"
        url = f"{bitbucket.url}/{REPO}"
        statuses = [client.get(url, timeout=10).status_code for _ in range(3)]
        limited = client.get(url, timeout=10)

        assert statuses == [200, 200, 200]
        assert limited.status_code == 429
        assert limited.json() == {
            "type": "error",
            "error": {"message": "Rate limit for this resource has been exceeded"},
        }
        assert "Retry-After" not in limited.headers
        assert client.get(url, timeout=10).status_code == 429

        bitbucket.reset_rate_limit()
        assert client.get(url, timeout=10).status_code == 200


# -- faults, log and latency ---------------------------------------------------------


def test_faults_in_order(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    fake_bitbucket.add_fault(r"/pullrequests$", status=500)
    fake_bitbucket.add_fault(r"/pullrequests$", mode="html")
    fake_bitbucket.add_fault(
        r"/pullrequests$", status=429, headers={"Retry-After": "7"}, times=2
    )

    failed = session.get(url, timeout=10)
    assert failed.status_code == 500
    assert failed.json() == {
        "type": "error",
        "error": {"message": "Internal Server Error"},
    }
    html = session.get(url, timeout=10)
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert session.get(url, timeout=10).headers["Retry-After"] == "7"
    assert session.get(url, timeout=10).status_code == 429
    assert session.get(url, timeout=10).status_code == 200

    faults = [entry.fault for entry in fake_bitbucket.requests(r"/pullrequests$")]
    assert faults == ["status 500", "html", "status 429", "status 429", None]


def test_faults_reset_truncate_and_query(
    fake_bitbucket: FakeBitbucket, session: requests.Session
) -> None:
    url = f"{fake_bitbucket.url}/{REPO}/pullrequests"
    fake_bitbucket.add_fault(r"/pullrequests$", mode="reset")
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=10)

    fake_bitbucket.add_fault(r"/pullrequests$", mode="truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url, timeout=10)

    fake_bitbucket.add_fault(r"/pullrequests$", query={"page": "2"}, status=502)
    assert session.get(url, timeout=10).status_code == 200
    assert session.get(url, params={"page": 2}, timeout=10).status_code == 502

    fake_bitbucket.add_fault(r"/pullrequests$", status=503, times=None)
    assert session.get(url, timeout=10).status_code == 503
    assert session.get(url, timeout=10).status_code == 503
    fake_bitbucket.clear_faults()
    assert session.get(url, timeout=10).status_code == 200


def test_fault_delay_and_latency() -> None:
    with FakeBitbucket(latency_s=0.2) as bitbucket:
        headers = {"Authorization": f"Bearer {bitbucket.token}"}
        url = f"{bitbucket.url}/user"
        started = time.monotonic()
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
        assert time.monotonic() - started >= 0.2

        bitbucket.add_fault(r"/user$", delay_s=2.0)
        with pytest.raises(requests.Timeout):
            requests.get(url, headers=headers, timeout=0.5)


def test_request_log(fake_bitbucket: FakeBitbucket, session: requests.Session) -> None:
    session.get(
        f"{fake_bitbucket.url}/{REPO}/pullrequests",
        params={"state": ["OPEN", "MERGED"]},
        timeout=10,
    )
    requests.get(f"{fake_bitbucket.url}/user", timeout=10)

    [entry] = fake_bitbucket.requests(r"/pullrequests$")
    assert entry.path == "/2.0/repositories/user-38/user-38php/pullrequests"
    assert entry.params == (("state", "OPEN"), ("state", "MERGED"))
    assert entry.query == {"state": "MERGED"}
    assert entry.status == 200
    assert entry.auth == "bearer"
    assert fake_bitbucket.request_count() == 2
    [anonymous] = fake_bitbucket.requests(r"/user$")
    assert anonymous.status == 401
    assert anonymous.auth is None

    fake_bitbucket.reset_log()
    assert fake_bitbucket.request_count() == 0


def test_command_line_serves_until_stopped() -> None:
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.bitbucket", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        assert first_line.startswith("BITBUCKET_API_URL=http://127.0.0.1:")
        api_url = first_line.split("=", 1)[1]
        headers = {"Authorization": "Bearer bb-test-token"}
        response = requests.get(f"{api_url}/user", headers=headers, timeout=10)
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
