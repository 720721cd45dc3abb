"""Tests for the fakes themselves: fake GitLab, reference receiver, test PostgreSQL."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
import standardwebhooks
from jwcrypto import jwe, jwk

from tests.fakes.gitlab import FakeGitLab
from tests.fakes.gitlab_data import CHARTS, SNOWFLAKE_SPEND, VDEV_CO
from tests.fakes.keys import ReceiverKeys, make_client_secret, make_rsa_keypair
from tests.fakes.postgres import ThrowawayPostgres
from tests.fakes.receiver import Receiver
from tests.fakes.tls import make_ca_and_server_cert

SNOWFLAKE_ID = 12345678
CHARTS_ID = 12345679
VDEV_ID = 12345680


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def session(fake_gitlab: FakeGitLab) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["PRIVATE-TOKEN"] = fake_gitlab.token
        yield client


def get_all(client: requests.Session, url: str, **params: Any) -> list[dict[str, Any]]:
    """Follow rel="next" links to the end, the way the agent should."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    next_params: dict[str, Any] | None = params
    while next_url:
        response = client.get(next_url, params=next_params, timeout=10)
        response.raise_for_status()
        items.extend(response.json())
        next_url = response.links.get("next", {}).get("url")
        next_params = None
    return items


def make_envelope(message_id: str, message_type: str = "sync.batch") -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": "gitlab",
        "records": {
            "pull_requests": [
                {"provider": "gitlab", "id": "32348491", "number": 1},
                {"provider": "gitlab", "id": "34300715", "number": 2},
            ],
            "deletions": [{"provider": "gitlab", "entity": "pull_requests", "id": "1"}],
        },
    }
    if message_type == "agent.heartbeat":
        data = {"started_at": "2026-01-02T03:04:05Z", "uptime_s": 5, "jobs": {}}
    return {
        "schema_version": 1,
        "type": message_type,
        "message_id": message_id,
        "agent_id": "agent-1",
        "agent_version": "0.1.0",
        "created_at": "2026-01-02T03:04:05Z",
        "data": data,
    }


def encrypt_with_jwcrypto(
    public_pem: str, plaintext: bytes, kid: str | None = None
) -> str:
    """Encrypt as the message contract requires, with jwcrypto, not joserfc."""
    key = jwk.JWK.from_pem(public_pem.encode())
    protected = {
        "alg": "RSA-OAEP-256",
        "enc": "A256GCM",
        "zip": "DEF",
        "cty": "application/json",
        "kid": kid or key.thumbprint(),
    }
    token = jwe.JWE(plaintext, protected=json.dumps(protected))
    token.add_recipient(key)
    return str(token.serialize(compact=True))


def signed_headers(
    secret: str, message_id: str, body: bytes, client_id: str = "client-test"
) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "Content-Type": "application/jose",
        "User-Agent": "mhq-sync-agent/0.1.0",
        "X-MHQ-Client-Id": client_id,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(
            message_id, now, body
        ),
    }


def post_message(
    receiver: Receiver,
    keys: ReceiverKeys,
    envelope: dict[str, Any],
    **header_overrides: str,
) -> requests.Response:
    body = encrypt_with_jwcrypto(
        keys.public_pem, json.dumps(envelope).encode()
    ).encode()
    headers = signed_headers(keys.client_secret, envelope["message_id"], body)
    headers.update(header_overrides)
    return requests.post(receiver.url, data=body, headers=headers, timeout=10)


# -- fake GitLab: data --------------------------------------------------------------


def test_gitlab_serves_fixture_counts(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    api = fake_gitlab.api_url
    merge_requests = get_all(session, f"{api}/projects/{SNOWFLAKE_ID}/merge_requests")
    assert len(merge_requests) == 24
    assert len({record["id"] for record in merge_requests}) == 24
    assert len(get_all(session, f"{api}/projects/{CHARTS_ID}/pipelines")) == 29
    assert len(get_all(session, f"{api}/projects/{VDEV_ID}/pipelines")) == 16
    assert len(get_all(session, f"{api}/projects/{VDEV_ID}/deployments")) == 8

    notes = {
        iid: len(
            get_all(
                session, f"{api}/projects/{SNOWFLAKE_ID}/merge_requests/{iid}/notes"
            )
        )
        for iid in (1, 3, 4, 29, 30, 46, 37)
    }
    assert notes == {1: 11, 3: 6, 4: 3, 29: 1, 30: 1, 46: 1, 37: 3}
    commits = {
        iid: len(
            get_all(
                session, f"{api}/projects/{SNOWFLAKE_ID}/merge_requests/{iid}/commits"
            )
        )
        for iid in range(1, 8)
    }
    assert commits == {1: 5, 2: 9, 3: 1, 4: 1, 5: 18, 6: 1, 7: 2}


def test_project_by_id_or_path(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    for key, path, project_id in (
        ("gitlab-data%2Fsnowflake_spend", SNOWFLAKE_SPEND, SNOWFLAKE_ID),
        (str(CHARTS_ID), CHARTS, CHARTS_ID),
        ("merico-dev%2Fee%2Fvdev.co", VDEV_CO, VDEV_ID),
    ):
        response = session.get(f"{fake_gitlab.api_url}/projects/{key}", timeout=10)
        assert response.status_code == 200
        project = response.json()
        assert project["id"] == project_id
        assert project["path_with_namespace"] == path
        assert project["web_url"] == f"{fake_gitlab.url}/{path}"
        assert project["namespace"]["full_path"] == path.rsplit("/", 1)[0]
        assert project["default_branch"] == "master"
        assert project["archived"] is False


def test_ci_records_own_project_id(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    api = fake_gitlab.api_url
    pipelines = get_all(session, f"{api}/projects/{CHARTS_ID}/pipelines")
    assert {record["project_id"] for record in pipelines} == {CHARTS_ID}

    listed = get_all(session, f"{api}/projects/{VDEV_ID}/pipelines")
    assert "started_at" not in listed[0]
    detail = session.get(f"{api}/projects/{VDEV_ID}/pipelines/1078343570", timeout=10)
    assert detail.json()["started_at"] == "2023-11-20T07:17:10.123Z"
    assert detail.json()["project_id"] == VDEV_ID

    chart = session.get(f"{api}/projects/{CHARTS_ID}/pipelines/457474837", timeout=10)
    assert chart.status_code == 200
    assert chart.json()["updated_at"] is None


def test_group_projects_with_subgroups(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    api = fake_gitlab.api_url
    direct = session.get(f"{api}/groups/merico-dev/projects", timeout=10)
    assert direct.json() == []

    nested = session.get(
        f"{api}/groups/merico-dev/projects",
        params={"include_subgroups": "true"},
        timeout=10,
    )
    assert sorted(p["path_with_namespace"] for p in nested.json()) == [CHARTS, VDEV_CO]

    subgroup = session.get(f"{api}/groups/merico-dev%2Fee", timeout=10).json()
    by_id = session.get(f"{api}/groups/{subgroup['id']}/projects", timeout=10)
    assert len(by_id.json()) == 2
    assert session.get(f"{api}/groups/gitlab-data", timeout=10).json()["id"] == 4347861


# -- fake GitLab: pagination ----------------------------------------------------------


def test_pagination_last_page_has_no_next(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    response = session.get(url, params={"per_page": 10, "page": 3}, timeout=10)

    assert len(response.json()) == 4
    assert response.headers["X-Page"] == "3"
    assert response.headers["X-Per-Page"] == "10"
    assert response.headers["X-Next-Page"] == ""
    assert response.headers["X-Prev-Page"] == "2"
    assert response.headers["X-Total"] == "24"
    assert response.headers["X-Total-Pages"] == "3"
    assert "next" not in response.links
    assert set(response.links) == {"prev", "first", "last"}


def test_pagination_links_keep_query_and_prefix() -> None:
    with FakeGitLab(prefix="/gitlab") as gitlab, requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {gitlab.token}"
        url = f"{gitlab.url}/api/v4/projects/{SNOWFLAKE_ID}/merge_requests"
        params: dict[str, str | int] = {"state": "merged", "per_page": 5}
        response = client.get(url, params=params, timeout=10)

        assert response.status_code == 200
        next_url = response.links["next"]["url"]
        assert next_url.startswith(f"{gitlab.url}/api/v4/projects/{SNOWFLAKE_ID}/")
        assert "state=merged" in next_url
        assert "per_page=5" in next_url
        assert "page=2" in next_url
        assert response.headers["X-Next-Page"] == "2"
        assert response.headers["X-Prev-Page"] == ""
        assert "prev" not in response.links

        merged = get_all(client, url, state="merged", per_page=5)
        assert len(merged) == 12
        assert {record["state"] for record in merged} == {"merged"}
        assert gitlab.requests(r"/merge_requests$")[0].path.startswith("/api/v4/")


def test_pagination_omits_totals_above_limit() -> None:
    with FakeGitLab(totals_limit=10) as gitlab, requests.Session() as client:
        client.headers["PRIVATE-TOKEN"] = gitlab.token
        url = f"{gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
        response = client.get(url, params={"per_page": 10}, timeout=10)

        assert "X-Total" not in response.headers
        assert "X-Total-Pages" not in response.headers
        assert "last" not in response.links
        assert response.headers["X-Next-Page"] == "2"
        assert len(get_all(client, url, per_page=10)) == 24

        small = client.get(
            f"{gitlab.api_url}/projects/{VDEV_ID}/deployments", timeout=10
        )
        assert small.headers["X-Total"] == "8"


def test_pagination_caps_per_page_at_100(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    response = session.get(url, params={"per_page": 500}, timeout=10)
    assert response.headers["X-Per-Page"] == "100"
    default = session.get(url, timeout=10)
    assert default.headers["X-Per-Page"] == "20"
    assert len(default.json()) == 20


# -- fake GitLab: filters -------------------------------------------------------------


def test_merge_request_filters_and_sort(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    states = {
        state: len(get_all(session, url, state=state, per_page=100))
        for state in ("opened", "merged", "closed", "all")
    }
    assert states == {"opened": 8, "merged": 12, "closed": 4, "all": 24}

    since = "2022-03-15T03:07:22.642Z"
    recent = get_all(
        session,
        url,
        updated_after=since,
        order_by="updated_at",
        sort="asc",
        per_page=100,
    )
    updated = [record["updated_at"] for record in recent]
    assert updated[0] == since
    assert updated == sorted(updated)
    assert len(recent) == 6

    before = get_all(session, url, updated_before="2019-08-04T22:24:40.946Z")
    assert sorted(record["iid"] for record in before) == [1, 2]


def test_invalid_parameters_get_400(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    assert session.get(url, params={"state": "nope"}, timeout=10).status_code == 400
    assert (
        session.get(url, params={"updated_after": "yesterday"}, timeout=10).status_code
        == 400
    )
    assert session.get(url, params={"page": "x"}, timeout=10).status_code == 400


def test_null_updated_at_uses_created_at(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{CHARTS_ID}/pipelines"
    pipelines = get_all(
        session,
        url,
        updated_after="2022-01-27T10:07:30Z",
        updated_before="2022-01-27T10:08:00Z",
    )
    assert [record["iid"] for record in pipelines] == [4]


def test_deployments_filter_needs_order_by(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{VDEV_ID}/deployments"
    since = {"updated_after": "2019-03-13T15:00:00Z"}
    rejected = session.get(url, params=since, timeout=10)
    assert rejected.status_code == 400
    assert "message" in rejected.json()

    accepted = session.get(url, params={**since, "order_by": "updated_at"}, timeout=10)
    assert accepted.status_code == 200
    ids = [record["id"] for record in accepted.json()]
    assert 13436915 in ids  # no updated_at, created 15:25:15
    assert 13426753 not in ids
    assert len(ids) == 6


# -- fake GitLab: auth, approvals, mutations, faults, TLS -----------------------------


def test_auth_rejects_bad_tokens(fake_gitlab: FakeGitLab) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json() == {"message": "401 Unauthorized"}
    wrong = requests.get(url, headers={"PRIVATE-TOKEN": "glpat-wrong"}, timeout=10)
    assert wrong.status_code == 401

    old = {"Authorization": f"Bearer {fake_gitlab.token}"}
    assert requests.get(url, headers=old, timeout=10).status_code == 200
    fake_gitlab.set_token("glpat-rotated")
    assert requests.get(url, headers=old, timeout=10).status_code == 401
    new = {"PRIVATE-TOKEN": "glpat-rotated"}
    assert requests.get(url, headers=new, timeout=10).status_code == 200


def test_token_scopes_and_user(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    token = session.get(
        f"{fake_gitlab.api_url}/personal_access_tokens/self", timeout=10
    )
    assert token.json()["scopes"] == ["read_api"]
    assert token.json()["active"] is True
    user = session.get(f"{fake_gitlab.api_url}/user", timeout=10)
    assert user.json()["username"] == "mhq-agent-bot"


def test_unknown_path_gets_json_404(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    response = session.get(f"{fake_gitlab.api_url}/nothing/here", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    missing = session.get(f"{fake_gitlab.api_url}/projects/999", timeout=10)
    assert missing.json() == {"message": "404 Project Not Found"}


def test_approvals_absent_and_from_notes() -> None:
    with FakeGitLab() as absent, requests.Session() as client:
        client.headers["PRIVATE-TOKEN"] = absent.token
        url = f"{absent.api_url}/projects/{SNOWFLAKE_ID}/merge_requests/37/approvals"
        response = client.get(url, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"message": "404 Not found"}

    with FakeGitLab(approvals="from_notes") as gitlab, requests.Session() as client:
        client.headers["PRIVATE-TOKEN"] = gitlab.token
        base = f"{gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
        approved = client.get(f"{base}/37/approvals", timeout=10).json()
        # user-18 approved, unapproved and approved again
        assert [entry["user"]["username"] for entry in approved["approved_by"]] == [
            "user-18"
        ]
        assert approved["approved"] is True
        none = client.get(f"{base}/1/approvals", timeout=10).json()
        assert none["approved_by"] == []


def test_mutations_bump_updated_at(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    base = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    note = fake_gitlab.add_note(
        3,
        {
            "body": "late comment",
            "created_at": "2030-01-01T00:00:00.000Z",
            "updated_at": "2030-01-01T00:00:00.000Z",
        },
    )
    merge_request = session.get(f"{base}/3", timeout=10).json()
    assert merge_request["updated_at"] == "2030-01-01T00:00:00.000Z"
    notes = session.get(f"{base}/3/notes", params={"sort": "desc"}, timeout=10).json()
    assert notes[0]["id"] == note["id"]
    assert len(notes) == 7

    fake_gitlab.delete_note(3, note["id"])
    assert len(session.get(f"{base}/3/notes", timeout=10).json()) == 6

    fake_gitlab.update_merge_request(
        9, state="closed", updated_at="2031-01-01T00:00:00.000Z"
    )
    recent = session.get(
        base, params={"updated_after": "2030-06-01T00:00:00Z"}, timeout=10
    )
    assert [(r["iid"], r["state"]) for r in recent.json()] == [(9, "closed")]

    added = fake_gitlab.add_merge_request({"title": "New work"})
    assert (
        session.get(f"{base}/{added['iid']}", timeout=10).json()["title"] == "New work"
    )
    pipeline = fake_gitlab.add_pipeline(
        CHARTS, {"status": "success", "ref": "main", "sha": "a" * 40, "source": "push"}
    )
    listed = session.get(
        f"{fake_gitlab.api_url}/projects/{CHARTS_ID}/pipelines", timeout=10
    )
    assert listed.json()[0]["id"] == pipeline["id"]


def test_delete_and_move_project(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    api = fake_gitlab.api_url
    fake_gitlab.move_project(CHARTS, "merico-dev/charts-renamed")
    moved = session.get(f"{api}/projects/merico-dev%2Fcharts-renamed", timeout=10)
    assert moved.json()["id"] == CHARTS_ID
    via_old = session.get(f"{api}/projects/merico-dev%2Fee%2Fcharts", timeout=10)
    assert via_old.json()["path_with_namespace"] == "merico-dev/charts-renamed"

    fake_gitlab.delete_project(VDEV_CO)
    assert session.get(f"{api}/projects/{VDEV_ID}", timeout=10).status_code == 404
    gone = session.get(f"{api}/projects/{VDEV_ID}/deployments", timeout=10)
    assert gone.status_code == 404


def test_faults_in_order(fake_gitlab: FakeGitLab, session: requests.Session) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    fake_gitlab.add_fault(r"/merge_requests$", status=429, headers={"Retry-After": "3"})
    fake_gitlab.add_fault(r"/merge_requests$", mode="html")
    fake_gitlab.add_fault(r"/merge_requests$", status=502, times=2)

    limited = session.get(url, timeout=10)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    html = session.get(url, timeout=10)
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert session.get(url, timeout=10).status_code == 502
    assert session.get(url, timeout=10).status_code == 502
    assert session.get(url, timeout=10).status_code == 200

    faults = [entry.fault for entry in fake_gitlab.requests(r"/merge_requests$")]
    assert faults == ["status 429", "html", "status 502", "status 502", None]


def test_faults_reset_and_truncate(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    url = f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests"
    fake_gitlab.add_fault(r"/merge_requests$", mode="reset")
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=10)

    fake_gitlab.add_fault(r"/merge_requests$", mode="truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url, timeout=10)

    fake_gitlab.add_fault(r"/merge_requests$", query={"page": "2"}, status=500)
    assert session.get(url, timeout=10).status_code == 200
    assert session.get(url, params={"page": 2}, timeout=10).status_code == 500


def test_fault_delay_causes_timeout(
    fake_gitlab: FakeGitLab, session: requests.Session
) -> None:
    fake_gitlab.add_fault(r"/user$", delay_s=2.0)
    with pytest.raises(requests.Timeout):
        session.get(f"{fake_gitlab.api_url}/user", timeout=0.5)


def test_request_log(fake_gitlab: FakeGitLab, session: requests.Session) -> None:
    session.get(
        f"{fake_gitlab.api_url}/projects/{SNOWFLAKE_ID}/merge_requests?state=opened",
        timeout=10,
    )
    requests.get(f"{fake_gitlab.api_url}/user", timeout=10)

    entries = fake_gitlab.requests(r"/merge_requests")
    assert len(entries) == 1
    assert entries[0].query == {"state": "opened"}
    assert entries[0].status == 200
    assert entries[0].auth == "private-token"
    assert fake_gitlab.request_count() == 2
    assert fake_gitlab.requests(r"/user$")[0].status == 401

    fake_gitlab.reset_log()
    assert fake_gitlab.request_count() == 0


def test_rate_limit_headers_count_down() -> None:
    with FakeGitLab(rate_limit=2) as gitlab, requests.Session() as client:
        client.headers["PRIVATE-TOKEN"] = gitlab.token
        first = client.get(f"{gitlab.api_url}/user", timeout=10)
        second = client.get(f"{gitlab.api_url}/user", timeout=10)
        third = client.get(f"{gitlab.api_url}/user", timeout=10)
    assert first.headers["RateLimit-Remaining"] == "1"
    assert second.headers["RateLimit-Remaining"] == "0"
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1


def test_tls_with_private_ca(tmp_path: Path) -> None:
    ca_pem, cert, key = make_ca_and_server_cert(tmp_path)
    with FakeGitLab(tls=(cert, key)) as gitlab:
        assert gitlab.url.startswith("https://127.0.0.1:")
        headers = {"PRIVATE-TOKEN": gitlab.token}
        url = f"{gitlab.api_url}/projects/{SNOWFLAKE_ID}"

        trusted = requests.get(url, headers=headers, verify=str(ca_pem), timeout=10)
        assert trusted.status_code == 200
        assert trusted.json()["web_url"].startswith("https://")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, headers=headers, timeout=10)


# -- receiver -------------------------------------------------------------------------


def test_keys_have_expected_format() -> None:
    private_pem, public_pem = make_rsa_keypair()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    secret = make_client_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def test_receiver_accepts_jwcrypto_message(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    message_id = str(uuid.uuid4())
    response = post_message(receiver, receiver_keys, make_envelope(message_id))

    assert response.status_code == 200, response.text
    [batch] = receiver.batches()
    assert batch.message_id == message_id
    assert batch.protected_header["kid"] == receiver.kid
    assert batch.headers["webhook-id"] == message_id
    assert len(receiver.records()) == 3
    assert [r.record["number"] for r in receiver.records("pull_requests")] == [1, 2]
    assert receiver.records("deletions")[0].record["entity"] == "pull_requests"
    assert receiver.records(provider="bitbucket") == []
    assert receiver.attempts()[0].status == 200


def test_receiver_rejects_bad_signature(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    envelope = make_envelope(str(uuid.uuid4()))
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    response = post_message(
        receiver, receiver_keys, envelope, **{"webhook-signature": forged}
    )

    assert response.status_code == 401
    assert "error" in response.json()
    assert receiver.messages() == []
    assert receiver.attempts()[0].status == 401
    assert receiver.attempts()[0].error is not None


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"X-MHQ-Client-Id": "someone-else"}, 401),
        ({"Content-Type": "application/json"}, 400),
        ({"User-Agent": "python-requests/2"}, 400),
    ],
)
def test_receiver_rejects_bad_headers(
    receiver: Receiver,
    receiver_keys: ReceiverKeys,
    overrides: dict[str, str],
    status: int,
) -> None:
    response = post_message(
        receiver, receiver_keys, make_envelope(str(uuid.uuid4())), **overrides
    )
    assert response.status_code == status
    assert receiver.messages() == []


def test_receiver_rejects_bad_envelope(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    wrong_version = make_envelope(str(uuid.uuid4()))
    wrong_version["schema_version"] = 2
    assert post_message(receiver, receiver_keys, wrong_version).status_code == 400

    local_time = make_envelope(str(uuid.uuid4()))
    local_time["created_at"] = "2026-01-02T03:04:05+01:00"
    assert post_message(receiver, receiver_keys, local_time).status_code == 400

    other_id = make_envelope(str(uuid.uuid4()))
    body = encrypt_with_jwcrypto(
        receiver_keys.public_pem, json.dumps(other_id).encode()
    )
    headers = signed_headers(receiver_keys.client_secret, "another-id", body.encode())
    mismatch = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert mismatch.status_code == 400
    assert "message_id" in mismatch.json()["error"]


def test_receiver_rejects_wrong_kid(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    envelope = make_envelope(str(uuid.uuid4()))
    body = encrypt_with_jwcrypto(
        receiver_keys.public_pem, json.dumps(envelope).encode(), kid="k1"
    )
    headers = signed_headers(
        receiver_keys.client_secret, envelope["message_id"], body.encode()
    )
    response = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert response.status_code == 400
    assert "protected header" in response.json()["error"]


def test_receiver_repeated_id_gets_409(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    envelope = make_envelope(str(uuid.uuid4()))
    assert post_message(receiver, receiver_keys, envelope).status_code == 200
    assert post_message(receiver, receiver_keys, envelope).status_code == 409
    assert receiver.duplicates == 1
    assert len(receiver.batches()) == 1


def test_receiver_scripted_responses(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    receiver.enqueue(503, headers={"Retry-After": "1"}, for_type="sync.batch")
    heartbeat = post_message(
        receiver, receiver_keys, make_envelope(str(uuid.uuid4()), "agent.heartbeat")
    )
    assert heartbeat.status_code == 200

    envelope = make_envelope(str(uuid.uuid4()))
    scripted = post_message(receiver, receiver_keys, envelope)
    assert scripted.status_code == 503
    assert scripted.headers["Retry-After"] == "1"
    assert receiver.batches() == []
    assert post_message(receiver, receiver_keys, envelope).status_code == 200
    assert [a.scripted for a in receiver.attempts()] == [False, True, False]


def test_receiver_max_body_413(receiver_keys: ReceiverKeys) -> None:
    keys = receiver_keys
    with Receiver(keys.private_pem, keys.client_secret, max_body_bytes=100) as small:
        response = post_message(small, keys, make_envelope(str(uuid.uuid4())))
    assert response.status_code == 413


def test_heartbeat_commands_are_signed(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    commands = [{"id": "cmd-1", "command": "sync_now", "parameters": {}}]
    receiver.queue_commands(commands)
    receiver.queue_commands(commands, secret=make_client_secret())
    verifier = standardwebhooks.Webhook(receiver_keys.client_secret)

    genuine = post_message(
        receiver, receiver_keys, make_envelope(str(uuid.uuid4()), "agent.heartbeat")
    )
    assert genuine.status_code == 200
    assert verifier.verify(genuine.content, dict(genuine.headers)) == {
        "commands": commands
    }

    forged = post_message(
        receiver, receiver_keys, make_envelope(str(uuid.uuid4()), "agent.heartbeat")
    )
    assert forged.json() == {"commands": commands}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(forged.content, dict(forged.headers))

    empty = post_message(
        receiver, receiver_keys, make_envelope(str(uuid.uuid4()), "agent.heartbeat")
    )
    assert verifier.verify(empty.content, dict(empty.headers)) == {"commands": []}
    assert len(receiver.heartbeats()) == 3


def test_receiver_refuses_then_accepts(
    receiver: Receiver, receiver_keys: ReceiverKeys
) -> None:
    port = receiver.port
    receiver.refuse_connections()
    with pytest.raises(requests.ConnectionError):
        post_message(receiver, receiver_keys, make_envelope(str(uuid.uuid4())))

    receiver.accept_connections()
    assert receiver.port == port
    response = post_message(receiver, receiver_keys, make_envelope(str(uuid.uuid4())))
    assert response.status_code == 200


def test_stop_closes_keep_alive_connections(receiver_keys: ReceiverKeys) -> None:
    keys = receiver_keys
    with (
        Receiver(keys.private_pem, keys.client_secret) as running,
        requests.Session() as client,
    ):
        envelope = make_envelope(str(uuid.uuid4()))
        body = encrypt_with_jwcrypto(keys.public_pem, json.dumps(envelope).encode())
        headers = signed_headers(
            keys.client_secret, envelope["message_id"], body.encode()
        )
        assert client.post(running.url, data=body, headers=headers, timeout=10).ok
        url = running.url
        running.refuse_connections()
        with pytest.raises(requests.ConnectionError):
            client.post(url, data=body, headers=headers, timeout=10)


# -- PostgreSQL -----------------------------------------------------------------------


def test_db_url_is_fresh_database(db_url: str) -> None:
    with psycopg2.connect(db_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        row = cursor.fetchone()
    connection.close()
    assert row is not None
    assert row[0].startswith("mhq_test_")


def test_postgres_restart_keeps_port_data() -> None:
    with ThrowawayPostgres() as server:
        port = server.port
        with psycopg2.connect(server.url) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE kept (value text)")
            cursor.execute("INSERT INTO kept VALUES ('before restart')")
        connection.close()

        server.restart(mode="immediate")
        assert server.port == port
        with psycopg2.connect(server.url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT value FROM kept")
            assert cursor.fetchall() == [("before restart",)]
        connection.close()

        server.stop()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        started = time.monotonic()
        server.start()
        assert time.monotonic() - started < 60
        assert server.port == port
