"""Delivering outbox batches to MHQ, handling each response status as agreed with MHQ.

2xx or 409 (already received): delivered. 400/422: rejected and kept until an
operator resends them. 401/403/404/410: stop this run and keep everything. 413:
split in two. 408, 425, 429, 5xx and network errors: retry with backoff and jitter,
honouring Retry-After, within the retry budget; then stop, keeping the order.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import requests

from agent import __version__
from agent.config.settings import Settings
from agent.errors import DeliveryRetryableError, DeliveryStoppedError
from agent.logs import mask
from agent.processing.privacy import PolicySettings
from agent.push.audit import AuditLog, MessageInfo
from agent.push.client import (
    NETWORK_ERRORS,
    RETRY_STATUSES,
    STOP_STATUSES,
    MhqClient,
    retry_after,
)
from agent.store.outbox import Batch, Outbox

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    batches_created: int = 0
    delivered_batches: int = 0
    delivered_records: int = 0
    rejected_batches: int = 0
    split_batches: int = 0
    attempts: int = 0
    stopped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


def push(
    settings: Settings,
    outbox: Outbox,
    *,
    agent_id: str,
    stop: threading.Event,
    retry_rejected: bool = False,
) -> PushResult:
    """Queue unsent records into batches and deliver every pending batch in order."""
    client = MhqClient(settings, AuditLog(outbox.db))
    result = PushResult()
    privacy = PolicySettings.from_values(settings.get)
    if retry_rejected:
        # Rejected batches built under other privacy settings go out rebuilt.
        outbox.rebuild_stale(privacy.fingerprint(), ("rejected",))
    created = outbox.build_batches(
        agent_id=agent_id,
        agent_version=__version__,
        max_records=settings.get("push.max_batch_records"),
        max_bytes=settings.get("push.max_batch_bytes"),
        privacy=privacy,
    )
    result.batches_created = len(created)
    if retry_rejected:
        log.info(
            "resending rejected batches", extra={"batches": outbox.retry_rejected()}
        )
    budget = float(settings.get("push.retry_budget_s"))
    try:
        for batch in outbox.pending():
            if stop.is_set():
                result.stopped_reason = "shutdown"
                break
            _deliver(client, outbox, batch, result, budget, stop)
    except (DeliveryStoppedError, DeliveryRetryableError) as exc:
        result.stopped_reason = str(exc)
        result.errors.append(str(exc))
        log.error("push stopped", extra={"reason": str(exc)})
    finally:
        client.close()
    return result


def _deliver(
    client: MhqClient,
    outbox: Outbox,
    batch: Batch,
    result: PushResult,
    budget_s: float,
    stop: threading.Event,
) -> None:
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        attempt += 1
        result.attempts += 1
        response, error = _post(client, batch)
        status = response.status_code if response is not None else None
        outbox.record_attempt(batch.id, status, error)
        if status is not None and (200 <= status < 300 or status == 409):
            outbox.mark(batch.id, "delivered")
            result.delivered_batches += 1
            result.delivered_records += batch.record_count
            log.info(
                "batch delivered",
                extra={
                    "batch_id": batch.id,
                    "records": batch.record_count,
                    "status": status,
                },
            )
            return
        if status in (400, 422):
            outbox.mark(batch.id, "rejected")
            result.rejected_batches += 1
            result.errors.append(f"batch {batch.id} rejected with {status}: {error}")
            log.error(
                "batch rejected, kept for push --retry-rejected",
                extra={"batch_id": batch.id, "status": status, "error": error},
            )
            return
        if status == 413:
            _split_or_reject(outbox, batch, result)
            return
        if status in STOP_STATUSES or (
            status is not None and status not in RETRY_STATUSES
        ):
            raise DeliveryStoppedError(
                f"MHQ answered {status} for batch {batch.id} ({error}); check the "
                "webhook URL, client id and client secret; nothing was lost",
                status=status or 0,
            )
        delay = retry_after(response)
        if delay is None:
            delay = random.uniform(0, min(60.0, 2.0 ** (attempt - 1)))
        if time.monotonic() + delay > deadline:
            raise DeliveryRetryableError(
                f"MHQ unavailable for batch {batch.id} after {attempt} attempts "
                f"({error or status}); the backlog waits for the next push run"
            )
        log.warning(
            "push retry",
            extra={
                "batch_id": batch.id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "retry_in_s": round(delay, 2),
            },
        )
        if stop.wait(delay):
            raise DeliveryRetryableError("shutdown requested during a push retry wait")


def _post(
    client: MhqClient, batch: Batch
) -> tuple[requests.Response | None, str | None]:
    try:
        info = MessageInfo(
            "sync.batch", batch.provider, batch.record_count, batch.counts
        )
        response = client.post(client.webhook_url, batch.id, batch.envelope, info)
    except NETWORK_ERRORS as exc:
        return None, f"{type(exc).__name__}: {mask(str(exc))[:300]}"
    if 200 <= response.status_code < 300:
        return response, None
    return response, mask(response.text[:300]) or None


def _split_or_reject(outbox: Outbox, batch: Batch, result: PushResult) -> None:
    if batch.record_count <= 1:
        outbox.mark(batch.id, "rejected")
        result.rejected_batches += 1
        result.errors.append(
            f"batch {batch.id} holds one record larger than MHQ accepts"
        )
        log.error("single-record batch too large for MHQ", extra={"batch_id": batch.id})
        return
    halves = outbox.split(batch)
    result.split_batches += 1
    log.warning(
        "batch too large (413), split in two",
        extra={"batch_id": batch.id, "records": batch.record_count, "halves": halves},
    )
