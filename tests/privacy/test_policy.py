"""The privacy policy on single records: fields, pseudonyms and hidden names."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest

from agent.processing.privacy import (
    REDACTED,
    Policy,
    PolicySettings,
    expand_hidden_values,
    key_id,
    pseudonym,
)

KEY = "test-pseudonym-key-0123456789"
OTHER_KEY = "another-pseudonym-key-9876543210"
PSEUDONYM = re.compile(r"^p_[0-9a-f]{24}$")


def pull_request(**fields: Any) -> dict[str, Any]:
    record = {
        "provider": "gitlab",
        "id": "101",
        "repository_id": "7",
        "number": 3,
        "title": "Add login page",
        "state": "open",
        "draft": False,
        "author_id": "11",
        "created_at": "2026-01-02T03:04:05.000Z",
        "updated_at": "2026-01-02T03:04:05.000Z",
        "merged_at": None,
        "closed_at": None,
        "merged_by_id": None,
        "source_branch": "feature/login",
        "target_branch": "main",
        "head_sha": "a" * 40,
        "merge_commit_sha": None,
        "squash_commit_sha": None,
        "additions": 4,
        "deletions": 1,
        "changed_files": 2,
        "reviewer_ids": ["12", "13"],
        "web_url": "https://gitlab.example.com/acme/shop/-/merge_requests/3",
    }
    record.update(fields)
    return record


def test_pseudonym_is_truncated_hmac() -> None:
    expected = hmac.new(KEY.encode(), b"username:jdoe", hashlib.sha256).hexdigest()

    made = pseudonym(KEY.encode(), "username", "jdoe")

    assert made == "p_" + expected[:24]
    assert PSEUDONYM.match(made)


def test_pseudonym_depends_on_key_and_kind() -> None:
    same = pseudonym(KEY.encode(), "username", "jdoe")

    assert pseudonym(KEY.encode(), "username", "jdoe") == same
    assert pseudonym(OTHER_KEY.encode(), "username", "jdoe") != same
    assert pseudonym(KEY.encode(), "branch", "jdoe") != same


def test_key_id_does_not_contain_key() -> None:
    assert KEY not in key_id(KEY.encode())
    assert key_id(KEY.encode()) != key_id(OTHER_KEY.encode())


def test_default_policy_changes_nothing() -> None:
    policy = Policy(PolicySettings())
    record = pull_request()

    assert not policy.active
    assert not policy.needs_parsing('{"title": "Add login page"}')
    assert policy.apply("pull_requests", record) == record


def test_key_pseudonymises_people() -> None:
    policy = Policy(PolicySettings(key=KEY))

    sent = policy.apply("pull_requests", pull_request(merged_by_id="14"))

    assert sent["author_id"] == pseudonym(KEY.encode(), "user_id", "11")
    assert sent["merged_by_id"] == pseudonym(KEY.encode(), "user_id", "14")
    assert sent["reviewer_ids"] == [
        pseudonym(KEY.encode(), "user_id", "12"),
        pseudonym(KEY.encode(), "user_id", "13"),
    ]
    assert sent["title"] == "Add login page"
    assert sent["source_branch"] == "feature/login"


def test_user_record_links_to_references() -> None:
    policy = Policy(PolicySettings(key=KEY))

    user = policy.apply(
        "users", {"provider": "gitlab", "id": "11", "username": "jdoe", "name": "J D"}
    )
    event = policy.apply(
        "pull_request_events",
        {"provider": "gitlab", "id": "approval:101:11", "actor_id": "11"},
    )

    assert user["id"] == event["actor_id"]
    assert PSEUDONYM.match(user["username"])
    assert PSEUDONYM.match(user["name"])
    assert event["id"] == pseudonym(KEY.encode(), "event_id", "approval:101:11")


def test_author_name_shares_kind_with_name() -> None:
    policy = Policy(PolicySettings(key=KEY))

    user = policy.apply(
        "users", {"provider": "gitlab", "id": "11", "username": "x", "name": "Jo Doe"}
    )
    commit = policy.apply(
        "pull_request_commits",
        {"provider": "gitlab", "id": "c" * 40, "author_name": "Jo Doe"},
    )

    assert commit["author_name"] == user["name"]


def test_event_deletion_matches_event() -> None:
    policy = Policy(PolicySettings(key=KEY))

    event = policy.apply("pull_request_events", {"id": "approval:9:5"})
    deletion = policy.apply(
        "deletions", {"id": "approval:9:5", "entity": "pull_request_events"}
    )
    other = policy.apply("deletions", {"id": "101", "entity": "pull_requests"})

    assert deletion["id"] == event["id"]
    assert other["id"] == "101"


@pytest.mark.parametrize("action", ["redact", "pseudonymise"])
def test_titles_setting(action: str) -> None:
    policy = Policy(PolicySettings(key=KEY, titles=action))

    sent = policy.apply("pull_requests", pull_request())
    commit = policy.apply("pull_request_commits", {"id": "c1", "title": "Fix typo"})

    if action == "redact":
        assert sent["title"] is None
        assert commit["title"] is None
    else:
        assert sent["title"] == pseudonym(KEY.encode(), "title", "Add login page")
        assert commit["title"] == pseudonym(KEY.encode(), "title", "Fix typo")


@pytest.mark.parametrize("action", ["redact", "pseudonymise"])
def test_branch_setting(action: str) -> None:
    policy = Policy(PolicySettings(key=KEY, branch_names=action))

    sent = policy.apply("pull_requests", pull_request())
    deployment = policy.apply("deployments", {"id": "5", "ref": "release/1.2"})
    repository = policy.apply("repositories", {"id": "7", "default_branch": "main"})

    expected = {
        "redact": (None, None, None),
        "pseudonymise": tuple(
            pseudonym(KEY.encode(), "branch", b)
            for b in ("feature/login", "release/1.2", "main")
        ),
    }[action]
    assert (
        sent["source_branch"],
        deployment["ref"],
        repository["default_branch"],
    ) == expected
    assert sent["web_url"] == pull_request()["web_url"]


@pytest.mark.parametrize("action", ["redact", "pseudonymise"])
def test_repository_setting(action: str) -> None:
    policy = Policy(PolicySettings(key=KEY, repository_names=action))
    repository = {
        "id": "7",
        "key": "gitlab.example.com/acme/shop",
        "name": "shop",
        "namespace": "acme",
        "web_url": "https://gitlab.example.com/acme/shop",
        "default_branch": "main",
    }

    sent = policy.apply("repositories", repository)
    merge_request = policy.apply("pull_requests", pull_request())
    deployment = policy.apply(
        "deployments", {"id": "5", "web_url": "https://gitlab.example.com/x"}
    )

    assert sent["web_url"] is None
    assert merge_request["web_url"] is None
    assert deployment["web_url"] is None
    assert sent["default_branch"] == "main"
    if action == "redact":
        assert (sent["key"], sent["name"], sent["namespace"]) == (None, None, None)
    else:
        assert sent["key"] == pseudonym(KEY.encode(), "repository", repository["key"])
        assert sent["name"] == pseudonym(KEY.encode(), "repository_name", "shop")
        assert sent["namespace"] == pseudonym(KEY.encode(), "namespace", "acme")


def test_hidden_branch_replaced_in_title() -> None:
    settings = PolicySettings(key=KEY, branch_names="pseudonymise")
    policy = Policy(settings, [("branch", "feature/login"), ("branch", "main")])

    sent = policy.apply(
        "pull_request_commits",
        {"id": "c1", "title": "Merge branch 'feature/login' into 'MAIN' (domain)"},
    )

    login = pseudonym(KEY.encode(), "branch", "feature/login")
    main = pseudonym(KEY.encode(), "branch", "main")
    assert sent["title"] == f"Merge branch '{login}' into '{main}' (domain)"


def test_redacted_name_becomes_marker() -> None:
    policy = Policy(PolicySettings(branch_names="redact"), [("branch", "main")])

    sent = policy.apply("pull_request_commits", {"id": "c1", "title": "into main"})

    assert sent["title"] == f"into {REDACTED}"


def test_username_replaced_in_repository_key() -> None:
    policy = Policy(PolicySettings(key=KEY), [("username", "jdoe")])

    sent = policy.apply(
        "repositories",
        {
            "id": "7",
            "key": "gitlab.example.com/jdoe/tools",
            "namespace": "jdoe",
            "web_url": "https://gitlab.example.com/jdoe/tools",
        },
    )

    jdoe = pseudonym(KEY.encode(), "username", "jdoe")
    assert sent["key"] == f"gitlab.example.com/{jdoe}/tools"
    assert sent["namespace"] == jdoe
    assert sent["web_url"] == f"https://gitlab.example.com/{jdoe}/tools"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param("jdoe/fix", True, id="slash"),
        pytest.param("jdoe_fix", True, id="underscore"),
        pytest.param("JDoe-fix", True, id="case"),
        pytest.param("fix by jdoe.", True, id="sentence"),
        pytest.param("jdoe2", False, id="digit-after"),
        pytest.param("ajdoe", False, id="letter-before"),
    ],
)
def test_name_found_as_whole_word(text: str, found: bool) -> None:
    policy = Policy(PolicySettings(key=KEY), [("username", "jdoe")])

    sent = policy.text(text)

    assert ("jdoe" not in sent.lower()) is found


def test_short_names_not_searched() -> None:
    policy = Policy(PolicySettings(key=KEY), [("username", "qa")])

    assert policy.text("qa team") == "qa team"


def test_longest_name_wins() -> None:
    hidden = expand_hidden_values(
        [("repository", "gitlab.example.com/acme/shop"), ("namespace", "acme")]
    )
    policy = Policy(PolicySettings(key=KEY, repository_names="pseudonymise"), hidden)

    sent = policy.text("see acme/shop and acme")

    path = pseudonym(KEY.encode(), "repository_path", "acme/shop")
    acme = pseudonym(KEY.encode(), "namespace", "acme")
    assert sent == f"see {path} and {acme}"


def test_nested_namespace_parts_hidden() -> None:
    hidden = expand_hidden_values([("namespace", "acme/platform/web")])
    policy = Policy(PolicySettings(repository_names="redact"), hidden)

    assert policy.text("platform team") == f"{REDACTED} team"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("mail jane.doe@example.com now", id="plain"),
        pytest.param("ja\u200bne@exa\u200bmple.com", id="zero-width"),
        pytest.param("ops\uff20example.net", id="fullwidth-at"),
        pytest.param("git@gitlab.example.com:acme/shop.git", id="ssh-remote"),
        pytest.param("\u202ejane@example.com\u202c", id="rtl-override"),
    ],
)
def test_email_removed_without_policy(text: str) -> None:
    policy = Policy(PolicySettings())
    stored = '{"title": "' + text + '"}'

    sent = policy.apply("pull_requests", pull_request(title=text))

    assert policy.needs_parsing(stored)
    assert REDACTED in sent["title"]
    assert "example" not in sent["title"].replace("\u200b", "")


def test_mention_is_not_email() -> None:
    assert Policy(PolicySettings()).text("cc @jdoe") == "cc @jdoe"


def test_ids_never_rewritten_for_email() -> None:
    policy = Policy(PolicySettings())

    sent = policy.apply("users", {"id": "a@b.c", "username": "u", "name": "x@y.org"})

    assert sent["id"] == "a@b.c"
    assert sent["name"] == REDACTED


def test_used_pseudonyms_collected() -> None:
    policy = Policy(PolicySettings(key=KEY))
    user = {"id": "11", "username": "jdoe", "name": "J D"}

    policy.apply("users", user)
    used = policy.take_unsaved()

    assert sorted(used.values()) == [
        ("name", "J D"),
        ("user_id", "11"),
        ("username", "jdoe"),
    ]
    assert policy.take_unsaved() == {}


def test_unsaved_until_marked_saved() -> None:
    policy = Policy(PolicySettings(key=KEY))
    user = {"id": "11", "username": "jdoe", "name": "J D"}

    policy.apply("users", user)
    policy.take_unsaved()
    # A repeated transaction uses them again before any was committed.
    policy.apply("users", user)
    repeated = policy.take_unsaved()
    policy.mark_saved()
    policy.apply("users", user)

    assert len(repeated) == 3
    assert policy.take_unsaved() == {}


def test_cached_text_reports_pseudonyms() -> None:
    policy = Policy(PolicySettings(key=KEY), [("username", "jdoe")])

    first = policy.text("jdoe/fix")
    policy.take_unsaved()
    again = policy.text("jdoe/fix")

    assert again == first
    assert list(policy.take_unsaved().values()) == [("username", "jdoe")]


def test_pseudonymise_without_key_raises() -> None:
    policy = Policy(PolicySettings(titles="pseudonymise"))

    with pytest.raises(ValueError, match=r"privacy\.pseudonym_key"):
        policy.apply("pull_requests", pull_request())


def test_fingerprint_tracks_settings_not_key() -> None:
    base = PolicySettings(key=KEY)

    assert base.fingerprint() == PolicySettings(key=KEY).fingerprint()
    assert base.fingerprint() != PolicySettings(key=OTHER_KEY).fingerprint()
    assert base.fingerprint() != PolicySettings(key=KEY, titles="redact").fingerprint()
    assert KEY not in base.fingerprint()
