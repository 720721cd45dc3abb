"""The privacy policy: what each field becomes on its way to MHQ.

Records are stored as fetched. The policy is applied when they are put into outbox
batches, so the local store keeps the originals and a policy change applies to the
next batches. Three settings choose ``send``, ``redact`` (sent as null) or
``pseudonymise`` for titles, branch names and repository names, and a pseudonym key
turns every person into pseudonyms. A field that is still sent as text has every
name the policy hides replaced inside it (a branch name in a merge commit title, a
username in a personal namespace), and URLs are not sent when repository names are
hidden, because they contain the repository's path.

A pseudonym is ``p_`` followed by the first 24 hex digits (96 bits) of
HMAC-SHA256 under the pseudonym key, over ``<kind>:<value>``. The kind separates
domains: a branch and a username spelled alike get different pseudonyms, while a
user's display name and a commit author name spelled alike get the same one (both
are of kind ``name``), so MHQ can still link them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

SEND, REDACT, PSEUDONYMISE = "send", "redact", "pseudonymise"
PREFIX = "p_"
HEX_DIGITS = 24
# Put where a redacted name was inside a text that is still sent.
REDACTED = "[redacted]"
# Shorter names are left inside texts: "ci" or "qa" would hit ordinary words
# while telling little about anyone.
MIN_HIDDEN_LENGTH = 3

# The setting that controls each category of field.
PEOPLE = "privacy.pseudonym_key"
TITLES = "privacy.titles"
BRANCHES = "privacy.branch_names"
REPOSITORIES = "privacy.repository_names"

# Field categories, and the pseudonym kind of each value category.
USER_ID, USERNAME, NAME, EVENT_ID = "user_id", "username", "name", "event_id"
TITLE, BRANCH = "title", "branch"
REPOSITORY, REPOSITORY_NAME, NAMESPACE = "repository", "repository_name", "namespace"
REPOSITORY_PATH = "repository_path"
URL, TEXT = "url", "text"

SETTING_OF_KIND = {
    USER_ID: PEOPLE,
    USERNAME: PEOPLE,
    NAME: PEOPLE,
    EVENT_ID: PEOPLE,
    TITLE: TITLES,
    BRANCH: BRANCHES,
    REPOSITORY: REPOSITORIES,
    REPOSITORY_NAME: REPOSITORIES,
    NAMESPACE: REPOSITORIES,
    REPOSITORY_PATH: REPOSITORIES,
}

# The category of each field of each record array. A field missing here is never
# changed: ids, numbers, timestamps, states and commit SHAs. URL fields are not sent
# while repository names are hidden, and TEXT fields are sent with hidden names
# replaced. Event ids carry pseudonyms with a key set because Bitbucket's embed
# user ids.
CATEGORIES: dict[str, dict[str, str]] = {
    "repositories": {
        "key": REPOSITORY,
        "name": REPOSITORY_NAME,
        "namespace": NAMESPACE,
        "web_url": URL,
        "default_branch": BRANCH,
    },
    "users": {"id": USER_ID, "username": USERNAME, "name": NAME},
    "pull_requests": {
        "title": TITLE,
        "author_id": USER_ID,
        "merged_by_id": USER_ID,
        "source_branch": BRANCH,
        "target_branch": BRANCH,
        "reviewer_ids": USER_ID,
        "web_url": URL,
    },
    "pull_request_events": {"id": EVENT_ID, "actor_id": USER_ID},
    "pull_request_commits": {"author_name": NAME, "author_id": USER_ID, "title": TITLE},
    "deployments": {"environment": TEXT, "ref": BRANCH, "web_url": URL},
    "deletions": {},
}

# The stored fields whose values are hidden inside other texts, by the setting that
# hides them. Titles are not: they are long and not repeated inside other fields.
HIDDEN_VALUE_FIELDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    PEOPLE: (
        ("users", "username", USERNAME),
        ("users", "name", NAME),
        ("pull_request_commits", "author_name", NAME),
    ),
    BRANCHES: (
        ("pull_requests", "source_branch", BRANCH),
        ("pull_requests", "target_branch", BRANCH),
        ("deployments", "ref", BRANCH),
        ("repositories", "default_branch", BRANCH),
    ),
    REPOSITORIES: (
        ("repositories", "key", REPOSITORY),
        ("repositories", "name", REPOSITORY_NAME),
        ("repositories", "namespace", NAMESPACE),
    ),
}


# Characters that do not show: soft hyphen, zero-width and direction marks, word
# joiners, the byte order mark. An address split by them is still an address.
_INVISIBLE = "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
# An e-mail address, broadly: a local part, an at sign (also the fullwidth one),
# and a domain of one or more labels. It also takes "user@host" without a dot
# and SSH remotes such as "git@gitlab.com".
EMAIL = re.compile(
    rf"[\w.!#$%&'*+/=?^`{{|}}~{_INVISIBLE}-]+[@\uff20]"
    rf"[\w{_INVISIBLE}-]+(?:\.[\w{_INVISIBLE}-]+)*"
)


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """Return the keyed pseudonym of ``value`` in the domain ``kind``."""
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


def key_id(key: bytes) -> str:
    """Return a short id of the pseudonym key, to tell keys apart in local tables.

    It is an HMAC of a constant, so it reveals nothing usable about the key.
    """
    return hmac.new(key, b"mhq-pseudonym-key-id", hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class PolicySettings:
    """The four privacy settings; ``key`` is the pseudonym key or None."""

    key: str | None = None
    titles: str = SEND
    branch_names: str = SEND
    repository_names: str = SEND

    @classmethod
    def from_values(cls, get: Any) -> PolicySettings:
        """Read the settings through ``get(path)``, e.g. ``Settings.get``."""
        return cls(
            key=get(PEOPLE) or None,
            titles=get(TITLES) or SEND,
            branch_names=get(BRANCHES) or SEND,
            repository_names=get(REPOSITORIES) or SEND,
        )

    def action(self, setting: str) -> str:
        """Return what ``setting`` does: send, redact or pseudonymise."""
        if setting == PEOPLE:
            return PSEUDONYMISE if self.key else SEND
        return {
            TITLES: self.titles,
            BRANCHES: self.branch_names,
            REPOSITORIES: self.repository_names,
        }[setting]

    def hidden_settings(self) -> tuple[str, ...]:
        """Return the settings that hide something, in a fixed order."""
        return tuple(
            s
            for s in (PEOPLE, TITLES, BRANCHES, REPOSITORIES)
            if self.action(s) != SEND
        )

    @property
    def active(self) -> bool:
        return bool(self.hidden_settings())

    def fingerprint(self) -> str:
        """Return an id of the settings, with the key replaced by its key id.

        Batches are stamped with it, so a batch built under other settings is
        rebuilt instead of sent.
        """
        described = {
            "version": 1,
            "key_id": key_id(self.key.encode()) if self.key else None,
            "titles": self.titles,
            "branch_names": self.branch_names,
            "repository_names": self.repository_names,
        }
        text = json.dumps(described, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


DEFAULT_FINGERPRINT = PolicySettings().fingerprint()


class Policy:
    """Applies the settings to record payloads and texts; cheap to call per record.

    ``used`` collects every pseudonym used, with its kind and original, for the
    local lookup table. ``take_unsaved`` returns those not saved yet, and
    ``mark_saved`` records that the last ones taken were committed, so each
    pseudonym is written once per policy however many batches use it.
    """

    def __init__(
        self,
        settings: PolicySettings,
        hidden_values: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.settings = settings
        self.active = settings.active
        self._key = settings.key.encode() if settings.key else None
        self._actions = {
            kind: settings.action(setting) for kind, setting in SETTING_OF_KIND.items()
        }
        self._cache: dict[tuple[str, str], str] = {}
        self.used: dict[str, tuple[str, str]] = {}
        self._saved: set[str] = set()
        self._pending_save: set[str] = set()
        self._finder = _NameFinder(
            (kind, value)
            for kind, value in hidden_values
            if self._actions[kind] != SEND
        )
        # Texts already looked at, such as a target branch every merge request
        # shares, with the pseudonyms put into each.
        self._texts: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {}
        self._plans = {
            entity: [
                (field, handler)
                for field, category in fields.items()
                if (handler := self._handler(category)) is not None
            ]
            for entity, fields in CATEGORIES.items()
        }

    @property
    def key_id(self) -> str | None:
        return key_id(self._key) if self._key else None

    def take_unsaved(self) -> dict[str, tuple[str, str]]:
        """Return and forget the pseudonyms used since the last call, if unsaved."""
        made, self.used = self.used, {}
        unsaved = {p: v for p, v in made.items() if p not in self._saved}
        self._pending_save = set(unsaved)
        return unsaved

    def mark_saved(self) -> None:
        """Note that the pseudonyms last taken are in the lookup table now."""
        self._saved |= self._pending_save
        self._pending_save = set()

    def pseudonym(self, kind: str, value: str) -> str:
        """Return the pseudonym of ``value``; requires a pseudonym key."""
        made = self._cache.get((kind, value))
        if made is None:
            if self._key is None:
                raise ValueError(f"a {kind} pseudonym needs privacy.pseudonym_key")
            made = pseudonym(self._key, kind, value)
            self._cache[(kind, value)] = made
        # Noted on every use, so a batch whose transaction is repeated notes it again.
        self.used[made] = (kind, value)
        return made

    def needs_parsing(self, stored: str) -> bool:
        """Return whether a stored record's JSON text may change on its way out.

        Without a policy only an e-mail address can, and it needs an at sign.
        """
        return self.active or "@" in stored or "\uff20" in stored

    def apply(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Return the payload as it is sent under the policy; ``payload`` is kept."""
        result = dict(payload)
        for field, handler in self._plans[entity]:
            value = result.get(field)
            if value is None:
                continue
            if isinstance(value, list):
                result[field] = [handler(str(item)) for item in value]
            else:
                result[field] = handler(value if isinstance(value, str) else str(value))
        if entity == "deletions" and payload.get("entity") == "pull_request_events":
            result["id"] = self.field(EVENT_ID, payload.get("id"))
        return result

    def field(self, category: str, value: Any) -> Any:
        """Return one field's value as sent, given its category."""
        handler = self._handler(category)
        if value is None or handler is None:
            return value
        if isinstance(value, list):
            return [handler(str(item)) for item in value]
        return handler(str(value))

    def _handler(self, category: str) -> Callable[[str], Any] | None:
        """Return what a field of ``category`` goes through; None: sent as is."""
        if category == URL:
            return _null if self._actions[REPOSITORY] != SEND else self.text
        if category == TEXT:
            return self.text
        action = self._actions[category]
        if action == REDACT:
            return _null
        if action == PSEUDONYMISE:
            return functools.partial(self.pseudonym, category)
        if category in (USER_ID, EVENT_ID):
            return None
        return self.text

    def text(self, text: str) -> str:
        """Return ``text`` as sent: e-mail addresses and hidden names replaced."""
        seen = self._texts.get(text)
        if seen is not None:
            for made, kind, value in seen[1]:
                self.used[made] = (kind, value)
            return seen[0]
        used: list[tuple[str, str, str]] = []

        def replacement(kind: str, value: str) -> str:
            if self._actions[kind] == REDACT:
                return REDACTED
            made = self.pseudonym(kind, value)
            used.append((made, kind, value))
            return made

        sent = text
        if "@" in sent or "\uff20" in sent:
            sent = EMAIL.sub(REDACTED, sent)
        sent = self._finder.replace(sent, replacement)
        if len(self._texts) >= _TEXT_CACHE_SIZE:
            self._texts.clear()
        self._texts[text] = (sent, tuple(used))
        return sent


# Texts remembered per policy before the memory is emptied; bounds its size.
_TEXT_CACHE_SIZE = 100_000


def _null(value: str) -> None:
    return None


def expand_hidden_values(rows: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Add the parts of repository keys and namespaces that name a group or project.

    A namespace ``a/b`` also hides ``a`` and ``b``; a key ``host/a/b/repo`` also
    hides ``a/b/repo``, the path GitLab and Bitbucket show in URLs and messages.
    """
    values: list[tuple[str, str]] = []
    for kind, value in rows:
        values.append((kind, value))
        if kind == NAMESPACE and "/" in value:
            values.extend((NAMESPACE, part) for part in value.split("/") if part)
        if kind == REPOSITORY and "/" in value:
            values.append((REPOSITORY_PATH, value.split("/", 1)[1]))
    return values


class _NameFinder:
    """Finds hidden names inside texts, case-insensitively, as whole words.

    A match may not continue a letter or digit on either side, so the branch
    ``main`` is found in ``into 'main'`` and ``main-fix`` but not in ``domain``.
    Punctuation at either end of a name is not part of what is searched for: the
    branch ``-wip-`` is found as ``wip``. A text is split into words. Only a word
    that starts some hidden name starts a walk along a character trie of the
    names, so the cost hardly grows with their number, which one branch per merge
    request can take to tens of thousands.
    """

    _END = ""
    _WORD = re.compile(r"[^\W_]+")
    _EDGES = re.compile(r"^[\W_]+|[\W_]+$")

    def __init__(self, names: Iterable[tuple[str, str]]) -> None:
        self._root: dict[str, Any] = {}
        self._first_words: set[str] = set()
        # Sorted, so that of names differing only in case the same one always wins.
        for kind, value in sorted(set(names)):
            core = self._EDGES.sub("", value)
            if len(core) < MIN_HIDDEN_LENGTH:
                continue
            node = self._root
            for char in core.casefold():
                node = node.setdefault(char, {})
            node.setdefault(self._END, (kind, value))
            # The text is folded before it is split into words, so the name is too.
            first = self._WORD.search(core.casefold())
            if first is not None:
                self._first_words.add(first.group())
        self.empty = not self._first_words

    def replace(self, text: str, replacement: Any) -> str:
        """Return ``text`` with each name replaced by ``replacement(kind, value)``."""
        if self.empty or self._first_words.isdisjoint(
            self._WORD.findall(text.casefold())
        ):
            return text
        parts: list[str] = []
        done = 0
        for word in self._WORD.finditer(text):
            begin = word.start()
            if begin < done or not self._starts_name(word.group()):
                continue
            found = self._longest(text, begin)
            if found is None:
                continue
            end, (kind, value) = found
            parts.append(text[done:begin])
            parts.append(replacement(kind, value))
            done = end
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def _starts_name(self, word: str) -> bool:
        folded = self._WORD.search(word.casefold())
        return folded is not None and folded.group() in self._first_words

    def _longest(self, text: str, begin: int) -> tuple[int, tuple[str, str]] | None:
        node: dict[str, Any] = self._root
        found = None
        length = len(text)
        position = begin
        while position < length:
            for char in text[position].casefold():
                child = node.get(char)
                if child is None:
                    return found
                node = child
            position += 1
            entry = node.get(self._END)
            if entry is not None and (
                position == length or not text[position].isalnum()
            ):
                found = (position, entry)
        return found
