"""POSTs encrypted, signed messages to MHQ."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from agent import __version__
from agent.config.settings import Settings
from agent.logs import mask
from agent.push.audit import AuditLog, MessageInfo
from agent.push.crypto import Encryptor, Signer

log = logging.getLogger(__name__)

NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
STOP_STATUSES = frozenset({401, 403, 404, 410})


class MhqClient:
    """Sends one message per call: encrypt, sign, POST; the caller handles statuses.

    With an ``audit`` log, every attempt is written to it before it is sent.
    """

    def __init__(self, settings: Settings, audit: AuditLog | None = None) -> None:
        settings.require(
            "mhq.webhook_url", "mhq.client_id", "mhq.client_secret", "mhq.public_key"
        )
        self.webhook_url: str = settings.get("mhq.webhook_url")
        self.heartbeat_url: str = settings.get("mhq.heartbeat_url") or self.webhook_url
        self.client_id: str = settings.get("mhq.client_id")
        self.encryptor = Encryptor(settings.get("mhq.public_key"))
        self.signer = Signer(settings.get("mhq.client_secret"))
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"mhq-sync-agent/{__version__}"
        self.request_count = 0
        self.audit = audit

    def post(
        self,
        url: str,
        message_id: str,
        plaintext: bytes,
        info: MessageInfo | None = None,
    ) -> requests.Response:
        """Send one attempt; raises requests' network errors unchanged."""
        body = self.encryptor.encrypt(plaintext)
        audit_id = None
        if self.audit is not None:
            audit_info = info or MessageInfo("unknown")
            audit_id = self.audit.start(message_id, url, plaintext, body, audit_info)
        headers = {
            "Content-Type": "application/jose",
            "X-MHQ-Client-Id": self.client_id,
            **self.signer.headers(message_id, body),
        }
        started = time.monotonic()
        status: Any = None
        error: str | None = None
        try:
            response = self.session.post(
                url, data=body, headers=headers, timeout=(10, 60)
            )
            status = response.status_code
            return response
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.request_count += 1
            if self.audit is not None:
                self.audit.finish(audit_id, status, error)
            log.info(
                "http request",
                extra={
                    "provider": "mhq",
                    "method": "POST",
                    "url": mask(url),
                    "status": status,
                    "message_id": message_id,
                    "bytes": len(body),
                    "elapsed_ms": round((time.monotonic() - started) * 1000),
                },
            )

    def close(self) -> None:
        self.session.close()


def retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        import email.utils

        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())
