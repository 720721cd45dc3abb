"""Helpers for the fault suite: agents run in the background, what the receiver holds,
what the database holds, and the search for secrets in everything produced."""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg2

from tests.fakes.bitbucket import FakeBitbucket
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.receiver import Receiver
from tests.integration.agent import AgentSetup

# A token unique to this test session, so a hit in any output is a real leak.
FAULT_TOKEN = "glpat-" + secrets.token_hex(12)
# The Bitbucket access token of this test session, unique for the same reason.
BITBUCKET_FAULT_TOKEN = "bbtok-" + secrets.token_hex(16)
Event = dict[str, Any]
# (entity, id, canonical JSON of the record): one version of one record.
Version = tuple[str, str, str]


def event(name: str, **fields: object) -> Callable[[Event], bool]:
    """Match a JSON log line by its event name and field values."""
    return lambda e: (
        e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
    )


class AgentProcess:
    """One agent command run in the background, its log lines read as they arrive."""

    def __init__(
        self,
        setup: AgentSetup,
        *args: str,
        on_output: Callable[[tuple[str, ...], str, str], None] | None = None,
    ) -> None:
        self.args = args
        self.events: list[Event] = []
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._changed = threading.Condition()
        self._on_output = on_output
        self.process = setup.start(*args)
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self._stdout),
                (self.process.stderr, self._stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line)
                if line.startswith("{") and lines is self._stderr:
                    self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, matches: Callable[[Event], bool], nth: int = 1, timeout: float = 30
    ) -> Event:
        """Wait for the nth log line that ``matches`` and return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [e for e in self.events if matches(e)]
                if len(found) >= nth:
                    return found[nth - 1]
                if self.process.poll() is not None and not any(
                    reader.is_alive() for reader in self._readers
                ):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(0.2, remaining))
        names = [e.get("event") for e in self.events[-8:]]
        raise AssertionError(f"log line {nth} not seen; last events: {names}")

    def kill(self) -> int:
        """SIGKILL the agent, which must still be running, and return its status."""
        assert self.process.poll() is None, "the agent ended before the kill point"
        self.process.kill()
        return self.finish()

    def finish(self, timeout: float = 60) -> int:
        """Wait for the exit and hand the output to the observer."""
        status = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)
        if self._on_output is not None:
            self._on_output(self.args, self.stdout, self.stderr)
        return status

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)


def sync_until_ok(setup: AgentSetup, attempts: int = 4) -> list[int]:
    """Run ``sync`` until it exits 0; return every exit status seen."""
    statuses = []
    for _ in range(attempts):
        completed = setup.run("sync")
        statuses.append(completed.returncode)
        if completed.returncode == 0:
            return statuses
    tail = completed.stderr[-3000:]
    raise AssertionError(f"sync did not succeed in {attempts} runs: {tail}")


# -- what the receiver received ------------------------------------------------------


def versions(receiver: Receiver, *hosts: str) -> dict[Version, set[str]]:
    """Map each received version of each record to the message ids it came under.

    Each of ``hosts`` (the host:port of a fake code host) is replaced by HOST, so
    runs against fakes on different ports compare equal.
    """
    found: dict[Version, set[str]] = defaultdict(set)
    for received in receiver.records():
        content = json.dumps(received.record, sort_keys=True, ensure_ascii=False)
        content = without_hosts(content, hosts)
        found[(received.entity, str(received.record["id"]), content)].add(
            received.message_id
        )
    return dict(found)


def without_hosts(text: str, hosts: tuple[str, ...]) -> str:
    """Replace each of ``hosts`` in ``text`` by HOST, the longest first.

    The longest goes first because one host:port can be the start of another
    (127.0.0.1:4123 and 127.0.0.1:41234).
    """
    for host in sorted(hosts, key=len, reverse=True):
        if host:
            text = text.replace(host, "HOST")
    return text


def sent_twice(receiver: Receiver) -> list[Version]:
    """Return the versions that arrived under more than one message id."""
    return [v for v, ids in versions(receiver).items() if len(ids) > 1]


def host_of(fake: FakeGitLab | FakeBitbucket) -> str:
    return f"127.0.0.1:{fake.port}"


# -- what the database contains ------------------------------------------------------


def query(db_url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement and commit; return its rows, or [] when it returns none."""
    with contextlib.closing(psycopg2.connect(db_url)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description is not None else []
        conn.commit()
    return rows


def bookmarks(
    db_url: str, *hosts: str, provider: str | None = None
) -> dict[tuple[str, str], str]:
    """Return the bookmarks by repository key and stream, each of ``hosts`` shown as
    HOST. With ``provider``, return only that provider's bookmarks."""
    rows = query(
        db_url,
        "SELECT repository_key, stream, value FROM bookmarks "
        "WHERE %(provider)s::text IS NULL OR provider = %(provider)s",
        {"provider": provider},
    )
    return {(without_hosts(key, hosts), stream): value for key, stream, value in rows}


def running_job_runs(db_url: str) -> list[tuple[Any, ...]]:
    return query(db_url, "SELECT id, job FROM job_runs WHERE status = 'running'")


@contextlib.contextmanager
def locked(db_url: str, statement: str) -> Iterator[None]:
    """Hold the lock ``statement`` takes, in an open transaction, during the block."""
    conn = psycopg2.connect(db_url, application_name="fault-test-lock")
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
        yield
    finally:
        conn.rollback()
        conn.close()


def wait_until_agent_blocked(db_url: str, timeout: float = 20) -> str:
    """Wait until an agent connection waits on a lock; return its statement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(
            db_url,
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'mhq-agent%%' AND wait_event_type = 'Lock'",
        )
        if rows:
            return str(rows[0][0])
        time.sleep(0.02)
    raise AssertionError("the agent never waited on the test's lock")


# -- secrets -------------------------------------------------------------------------


@dataclass
class Output:
    """One piece of text the suite produced, and where it came from."""

    test: str
    kind: str
    text: str


@dataclass
class SecretSearch:
    """The secret values configured in the suite, and the outputs to search."""

    values: set[str] = field(default_factory=set)
    outputs: list[Output] = field(default_factory=list)
    test: str = ""

    def add_secret(self, value: str) -> None:
        self.values.add(value)
        if value.startswith("whsec_"):
            self.values.add(value.removeprefix("whsec_"))

    def add(self, kind: str, text: str) -> None:
        self.outputs.append(Output(self.test, kind, text))

    def observe(self, args: tuple[str, ...], stdout: str, stderr: str) -> None:
        command = " ".join(args)
        kind = "status output" if args and args[0] == "status" else "command output"
        self.add(f"{kind} ({command})", stdout)
        kind = "exception trace" if "Traceback" in stderr else "log"
        self.add(f"{kind} ({command})", stderr)

    def forms(self) -> set[str]:
        """The secret values as they would appear raw, URL-encoded or JSON-escaped."""
        found = set()
        for value in self.values:
            found |= {value, quote(value, safe=""), json.dumps(value)[1:-1]}
        return {form for form in found if len(form) >= 8}

    def hits(self, outputs: list[Output] | None = None) -> list[str]:
        """Return 'kind: secret prefix' for each secret found in ``outputs``."""
        found = []
        forms = self.forms()
        for output in self.outputs if outputs is None else outputs:
            for form in forms:
                if form in output.text:
                    found.append(f"{output.test} {output.kind}: {form[:6]}...")
        return found
