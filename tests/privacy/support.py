"""Hostile test data, the policies under test, and ways to search what MHQ got."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.gitlab_data import SNOWFLAKE_SPEND
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup

KEY = "privacy-test-key-" + "5f1d2c3b4a596877"
OTHER_KEY = "privacy-test-key-" + "0a1b2c3d4e5f6071"

# Policies by test id: the "privacy" section of config.json.
POLICIES: dict[str, dict[str, str]] = {
    "default": {},
    "people": {"pseudonym_key": KEY},
    "redact-all": {
        "titles": "redact",
        "branch_names": "redact",
        "repository_names": "redact",
    },
    "pseudonymise-all": {
        "pseudonym_key": KEY,
        "titles": "pseudonymise",
        "branch_names": "pseudonymise",
        "repository_names": "pseudonymise",
    },
    "mixed": {
        "pseudonym_key": KEY,
        "titles": "redact",
        "branch_names": "pseudonymise",
    },
    "repositories-only": {"repository_names": "redact"},
}

# Texts the code host holds that must never reach MHQ, whatever the policy.
DESCRIPTION = "DESCRIPTION-SENTINEL-4c1e do not send this"
NOTE_BODY = "NOTE-BODY-SENTINEL-77aa: looks fine"
COMMENT_BODY = "COMMENT-BODY-SENTINEL-91bd: please rename"
COMMIT_BODY = "COMMIT-BODY-SENTINEL-0f3e: long explanation"
DIFF = "@@ -1,3 +1,4 @@ DIFF-SENTINEL-5b2c"
FILE_PATH = "src/PATH-SENTINEL-a9e0/settings.py"
SENTINELS = (DESCRIPTION, NOTE_BODY, COMMENT_BODY, COMMIT_BODY, DIFF, FILE_PATH)
SENTINEL_WORDS = tuple(s.split(" ", 1)[0].split("/")[-1] for s in SENTINELS)

EMAILS = (
    "jane.doe@example.com",
    "ja\u200bne@exa\u200bmple.org",
    "ops\uff20example.net",
    "hostile.author@example.com",
)
HOSTILE_TITLE = (
    "Fix login for jane.doe@example.com in src/auth/login.py "
    "<script>alert('x')</script> \u202egnp.exe\u202c zero\u200bwidth "
    "\u05e9\u05dc\u05d5\u05dd"
)
HOSTILE_BRANCH = "feature/ja\u200bne@exa\u200bmple.org-<b>fix</b>"
HOSTILE_TARGET = "release/\u05e9\u05dc\u05d5\u05dd-\u200f1"


def add_hostile_data(gitlab: FakeGitLab, bitbucket: FakeBitbucket) -> None:
    """Add a merge request and a pull request whose every text is hostile."""
    _add_gitlab_merge_request(gitlab)
    _add_bitbucket_pull_request(bitbucket)


def _add_gitlab_merge_request(gitlab: FakeGitLab) -> None:
    author = {
        "id": 990001,
        "username": "hostile.author",
        "name": "Hostile Author ops\uff20example.net",
        "state": "active",
    }
    merge_request = gitlab.add_merge_request(
        {
            "title": HOSTILE_TITLE,
            "description": f"{DESCRIPTION} {EMAILS[0]} {DIFF} {FILE_PATH}",
            "source_branch": HOSTILE_BRANCH,
            "target_branch": HOSTILE_TARGET,
            "author": author,
            "reviewers": [author],
            "sha": "e" * 40,
        },
        project=SNOWFLAKE_SPEND,
    )
    iid = merge_request["iid"]
    gitlab.add_note(
        iid,
        {
            "body": f"{NOTE_BODY} {EMAILS[1]} {DIFF}",
            "type": "DiffNote",
            "position": {"new_path": FILE_PATH, "old_path": FILE_PATH},
            "author": author,
        },
    )
    gitlab.project(SNOWFLAKE_SPEND).commits[iid] = [
        {
            "id": "f" * 40,
            "short_id": "ffffffff",
            "created_at": merge_request["created_at"],
            "parent_ids": [],
            "title": f"Merge branch '{HOSTILE_BRANCH}' for {EMAILS[0]}",
            "message": f"Merge branch '{HOSTILE_BRANCH}'\n\n{COMMIT_BODY} {DIFF}\n"
            f"Signed-off-by: Jane <{EMAILS[0]}>",
            "author_name": EMAILS[3],
            "author_email": EMAILS[3],
            "authored_date": merge_request["created_at"],
            "committer_name": "Hostile Author",
            "committer_email": EMAILS[3],
            "committed_date": merge_request["created_at"],
            "trailers": {},
            "web_url": f"{gitlab.url}/{SNOWFLAKE_SPEND}/-/commit/{'f' * 40}",
        }
    ]


def _add_bitbucket_pull_request(bitbucket: FakeBitbucket) -> None:
    pull_request = bitbucket.add_pull_request(
        {
            "title": HOSTILE_TITLE,
            "description": f"{DESCRIPTION} {EMAILS[2]} {FILE_PATH}",
            "source": {
                "branch": {"name": HOSTILE_BRANCH},
                "commit": {"hash": "d" * 40},
            },
            "destination": {"branch": {"name": HOSTILE_TARGET}},
            "author": "hostile-bb-user",
            "reviewers": ["hostile-bb-user"],
        }
    )
    number = pull_request["id"]
    bitbucket.add_comment(
        number,
        {
            "content": {"raw": f"{COMMENT_BODY} {EMAILS[0]} {DIFF}"},
            "inline": {"path": FILE_PATH, "to": 3},
            "user": "hostile-bb-user",
        },
    )
    bitbucket.repository().commits[number] = [
        {
            "hash": "c" * 40,
            "date": pull_request["created_on"],
            "author": {"raw": f"Hostile Author <{EMAILS[3]}>"},
            "message": f"{HOSTILE_TITLE}\n\n{COMMIT_BODY} {DIFF}",
        }
    ]


def configure(agent: AgentSetup, policy: str) -> None:
    agent.config["privacy"] = dict(POLICIES[policy])


def strings(value: Any) -> Iterator[str]:
    """Yield every string in a decoded JSON value, keys excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def sent_strings(receiver: Receiver) -> list[str]:
    """Every string of every message MHQ accepted, envelopes included."""
    return [text for m in receiver.messages() for text in strings(m.envelope)]


# Record fields whose values come from a fixed list, such as "pipeline".
ENUM_FIELDS = frozenset({"provider", "source", "status", "state", "type", "entity"})


def free_texts(receiver: Receiver) -> list[str]:
    """Every string MHQ got that the code host's data could have put there.

    Record fields with fixed values are left out, so a branch called "pipeline"
    is not found in a deployment's source; the heartbeat's repository keys,
    which are object keys, are added.
    """
    found: list[str] = []
    for message in receiver.messages():
        if message.type != "sync.batch":
            found += strings(message.data)
            found += list(message.data.get("repositories", {}))
            continue
        for records in message.data["records"].values():
            for record in records:
                for field, value in record.items():
                    if field not in ENUM_FIELDS:
                        found += strings(value)
    return found


_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_ADDRESS = re.compile(r"[\w.+-]+[@\uff20][\w-]+(\.[\w-]+)+")


def email_addresses(texts: list[str]) -> list[str]:
    """Return what looks like an e-mail address once invisible characters go."""
    found = []
    for text in texts:
        visible = _INVISIBLE.sub("", text)
        found += [m.group() for m in _ADDRESS.finditer(visible)]
    return found


def contains_name(text: str, name: str) -> bool:
    """Whether ``name`` appears in ``text`` as the agent's guarantee defines it.

    Case-insensitive, not glued to a letter or digit on either side, punctuation
    at the name's ends ignored; names under three characters are not searched.
    """
    core = re.sub(r"^[\W_]+|[\W_]+$", "", name)
    if len(core) < 3:
        return False
    pattern = rf"(?<![^\W_]){re.escape(core)}(?![^\W_])"
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Stored:
    """Original values held in the agent's store, by what hides them."""

    titles: set[str]
    branches: set[str]
    repository_names: set[str]
    people: set[str]
    user_ids: set[str]


def stored_originals(db_url: str) -> Stored:
    """Read the originals the store keeps, as the policy saw them."""
    fields = {
        "titles": [("pull_requests", "title"), ("pull_request_commits", "title")],
        "branches": [
            ("pull_requests", "source_branch"),
            ("pull_requests", "target_branch"),
            ("deployments", "ref"),
            ("repositories", "default_branch"),
        ],
        "repository_names": [
            ("repositories", "key"),
            ("repositories", "name"),
            ("repositories", "namespace"),
        ],
        "people": [
            ("users", "username"),
            ("users", "name"),
            ("pull_request_commits", "author_name"),
        ],
        "user_ids": [("users", "id")],
    }
    values: dict[str, set[str]] = {name: set() for name in fields}
    with psycopg2.connect(db_url) as conn, conn.cursor() as cursor:
        for name, pairs in fields.items():
            for entity, field in pairs:
                cursor.execute(
                    "SELECT payload->>%s FROM records WHERE entity = %s",
                    (field, entity),
                )
                values[name] |= {row[0] for row in cursor.fetchall() if row[0]}
    conn.close()
    values["repository_names"] |= {
        key.split("/", 1)[1] for key in values["repository_names"] if "/" in key
    }
    return Stored(**values)


def records_by_entity(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for received in receiver.records():
        found.setdefault(received.entity, []).append(received.record)
    return found


def canonical(records: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Sort (entity, record) pairs as JSON text, for comparing two lists."""
    return sorted(
        json.dumps([entity, record], sort_keys=True, ensure_ascii=False)
        for entity, record in records
    )
