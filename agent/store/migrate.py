"""Apply the SQL migrations in agent/store/migrations, in dbmate's file format.

Each file is ``<version>_<name>.sql`` with a ``-- migrate:up`` section (applied) and a
``-- migrate:down`` section (kept for operators who use dbmate by hand). Applied
versions are rows of ``schema_migrations``, as dbmate keeps them, so either tool can
continue where the other stopped.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from agent.store.db import Database

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
# Any fixed number serves; it only has to differ from the agent's other locks.
MIGRATION_LOCK = 4_172_001


def available_migrations() -> list[tuple[str, str]]:
    """Return (version, up-SQL) pairs sorted by version."""
    found = []
    for entry in resources.files("agent.store").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append((match.group(1), _up_section(entry.read_text("utf-8"))))
    return sorted(found)


def _up_section(text: str) -> str:
    up = text.split("-- migrate:up", 1)[-1]
    return up.split("-- migrate:down", 1)[0]


def migrate(db: Database) -> list[str]:
    """Apply pending migrations under an advisory lock; return the versions applied."""
    applied_now: list[str] = []
    with db.transaction() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version varchar(128) PRIMARY KEY)"
        )
        cursor.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cursor.fetchall()}
        for version, sql in available_migrations():
            if version in done:
                continue
            cursor.execute(sql)
            cursor.execute(
                "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
            )
            applied_now.append(version)
    if applied_now:
        log.info("database migrated", extra={"versions": applied_now})
    return applied_now
