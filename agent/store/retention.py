"""Pruning: delivered batches and old job runs are deleted after a retention period.

Kept whatever their age:

- pending and rejected batches, which are not handled yet;
- a split batch, while any of its halves is kept;
- the latest run of each job, which ``status`` and the scheduler read;
- every record, because its content hash keeps an unchanged record from being sent
  again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.store.db import Cursor, Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    batches: int
    job_runs: int


def prune(db: Database, *, delivered_days: int, job_runs_days: int) -> Pruned:
    """Delete delivered batches and finished job runs older than their periods."""

    def delete(cursor: Cursor) -> Pruned:
        cursor.execute(
            "DELETE FROM outbox_batches WHERE status = 'delivered' "
            "AND delivered_at < now() - make_interval(days => %s)",
            (delivered_days,),
        )
        batches = cursor.rowcount + _prune_split_parents(cursor)
        cursor.execute(
            "DELETE FROM job_runs r WHERE r.status <> 'running' "
            "AND r.finished_at < now() - make_interval(days => %s) "
            "AND r.id <> (SELECT max(l.id) FROM job_runs l WHERE l.job = r.job)",
            (job_runs_days,),
        )
        return Pruned(batches, cursor.rowcount)

    pruned = db.run(delete)
    if pruned.batches or pruned.job_runs:
        log.info(
            "pruned delivered batches and old job runs",
            extra={"batches": pruned.batches, "job_runs": pruned.job_runs},
        )
    return pruned


def _prune_split_parents(cursor: Cursor) -> int:
    """Delete split batches none of whose halves is kept, level by level."""
    total = 0
    while True:
        cursor.execute(
            "DELETE FROM outbox_batches p WHERE p.status = 'split' AND NOT EXISTS "
            "(SELECT 1 FROM outbox_batches c WHERE c.parent_id = p.id)"
        )
        if cursor.rowcount == 0:
            return total
        total += cursor.rowcount
