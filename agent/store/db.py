"""Postgres connections: connect with backoff, transactions, translated errors."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from agent.errors import StoreError, StoreUnavailableError

log = logging.getLogger(__name__)

Cursor = psycopg2.extensions.cursor
T = TypeVar("T")

# Times ``Database.run`` starts a transaction whose connection keeps breaking.
TRANSACTION_ATTEMPTS = 3


class ConnectionLostError(StoreUnavailableError):
    """An open connection broke during a transaction, e.g. Postgres restarted."""


class Database:
    """One connection per instance; give each thread its own ``Database``.

    Lost connections are reopened with exponential backoff and jitter for up to
    ``reconnect_budget_s`` seconds. ``transaction`` does not repeat a transaction
    that was cut off; ``run``, ``fetch_all`` and ``execute`` do, so they are for
    work that is safe to repeat.
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect_budget_s: float = 60.0,
        stop: threading.Event | None = None,
        application_name: str = "mhq-agent",
    ) -> None:
        self.url = url
        self._budget = reconnect_budget_s
        self._stop = stop or threading.Event()
        self._application_name = application_name
        self._conn: psycopg2.extensions.connection | None = None

    def connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect_with_backoff()
        return self._conn

    def _connect_with_backoff(self) -> psycopg2.extensions.connection:
        delay, waited, attempt = 0.5, 0.0, 1
        while True:
            try:
                conn = psycopg2.connect(
                    self.url,
                    connect_timeout=5,
                    application_name=self._application_name,
                )
                conn.autocommit = False
                return conn
            except psycopg2.OperationalError as exc:
                if waited >= self._budget or self._stop.is_set():
                    raise StoreUnavailableError(
                        f"cannot connect to Postgres after {attempt} attempts "
                        f"({_first_line(exc)}); check DATABASE_URL and that the "
                        "server is running"
                    ) from exc
                sleep = min(delay, self._budget - waited) * random.uniform(0.5, 1.0)
                log.warning(
                    "database connect failed, retrying",
                    extra={"attempt": attempt, "retry_in_s": round(sleep, 2)},
                )
                self._stop.wait(sleep)
                waited += sleep
                delay = min(delay * 2, 10.0)
                attempt += 1

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """Yield a cursor in one transaction: commit on success, roll back on error."""
        conn = self.connection()
        try:
            with conn.cursor() as cursor:
                yield cursor
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._discard()
            raise ConnectionLostError(
                f"lost the Postgres connection ({_first_line(exc)})"
            ) from exc
        except psycopg2.Error as exc:
            self._rollback()
            raise StoreError(f"database error: {_first_line(exc)}") from exc
        except BaseException:
            self._rollback()
            raise

    def run(self, work: Callable[[Cursor], T]) -> T:
        """Call ``work`` in one transaction and return its result.

        When the connection breaks, the transaction is rolled back by Postgres, so
        ``work`` runs again on a new connection, up to ``TRANSACTION_ATTEMPTS``
        times. If the break hits the COMMIT itself, the first run may have been
        committed and ``work`` runs twice: use this only for work that is safe to
        repeat (upserts, status updates, reads).
        """
        attempt = 1
        while True:
            try:
                with self.transaction() as cursor:
                    return work(cursor)
            except ConnectionLostError as exc:
                if attempt >= TRANSACTION_ATTEMPTS or self._stop.is_set():
                    raise
                log.warning(
                    "database connection lost, repeating the transaction",
                    extra={"attempt": attempt, "error": str(exc)},
                )
                attempt += 1

    def fetch_all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows; repeated after a lost connection."""

        def query(cursor: Cursor) -> list[tuple[Any, ...]]:
            cursor.execute(sql, params)
            return cursor.fetchall()

        return self.run(query)

    def execute(self, sql: str, params: Any = None) -> None:
        """Run one statement; repeated after a lost connection."""
        self.run(lambda cursor: cursor.execute(sql, params))

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg2.Error:
                self._discard()

    def _discard(self) -> None:
        try:
            self.close()
        except psycopg2.Error:
            self._conn = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
