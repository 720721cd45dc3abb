"""The reference MHQ receiver: verifies, decrypts and stores what the agent POSTs.

It checks every message the way MHQ does: Standard Webhooks signature, client id,
compact JWE with the agreed algorithms and key id, and the envelope. Decryption uses
joserfc, a different JOSE library from the agent's, so a shared bug cannot hide.
Run `python -m tests.fakes.receiver` to try it by hand.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, cast

import standardwebhooks
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from tests.fakes.httpserver import (
    JSONRequestHandler,
    LoopbackServer,
    Reply,
    ServerThread,
    install_stop_handlers,
)
from tests.fakes.keys import make_receiver_keys

BATCH = "sync.batch"
HEARTBEAT = "agent.heartbeat"
MESSAGE_TYPES = (BATCH, HEARTBEAT)
PROVIDERS = ("gitlab", "bitbucket", "github")
ENTITIES = (
    "repositories",
    "users",
    "pull_requests",
    "pull_request_events",
    "pull_request_commits",
    "deployments",
    "deletions",
)
JWE_ALGORITHMS = ["RSA-OAEP-256", "A256GCM", "DEF"]
PATHS = ("/webhook", "/heartbeat")

logger = logging.getLogger(__name__)

_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

Headers = dict[str, str]


class Rejected(Exception):
    """A failed check. The receiver responds with `status` and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class AcceptedMessage:
    """An accepted message: the decrypted envelope and the request headers."""

    envelope: dict[str, Any]
    headers: Headers
    received_at: float
    protected_header: dict[str, Any]
    # SHA-256 (hex) of the request body, the JWE as it arrived.
    body_sha256: str = ""

    @property
    def type(self) -> str:
        return str(self.envelope["type"])

    @property
    def message_id(self) -> str:
        return str(self.envelope["message_id"])

    @property
    def data(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.envelope["data"])


@dataclass(frozen=True)
class Attempt:
    """One request as received, with the status the receiver returned."""

    webhook_id: str | None
    status: int
    received_at: float
    path: str
    message_type: str | None
    error: str | None
    body_size: int
    scripted: bool = False
    # SHA-256 (hex) of the request body, the JWE as it arrived.
    body_sha256: str = ""


@dataclass(frozen=True)
class ReceivedRecord:
    """One record of an accepted batch, with the array (entity) it came in."""

    entity: str
    provider: str
    record: dict[str, Any]
    message_id: str


@dataclass
class ScriptedResponse:
    """A response sent instead of normal processing, `times` times."""

    status: int
    headers: Headers = field(default_factory=dict)
    body: Any = None
    for_type: str | None = None
    times: int = 1


@dataclass
class _Checked:
    """Outcome of the checks on one request. envelope is None when a check failed."""

    envelope: dict[str, Any] | None = None
    protected: dict[str, Any] | None = None
    failure: Rejected | None = None

    @property
    def message_type(self) -> str | None:
        if self.envelope is None:
            return None
        value = self.envelope.get("type")
        return value if isinstance(value, str) else None


class Receiver:
    """HTTP endpoint on 127.0.0.1 that accepts messages exactly as MHQ does."""

    def __init__(
        self,
        private_key_pem: bytes | str,
        client_secret: str,
        client_id: str = "client-test",
        *,
        duplicate_status: int = 409,
        max_body_bytes: int | None = None,
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.duplicate_status = duplicate_status
        self.max_body_bytes = max_body_bytes
        self._client_secret = client_secret
        self._webhook = standardwebhooks.Webhook(client_secret)
        self._secret_bytes = base64.b64decode(
            client_secret.removeprefix("whsec_") + "=="
        )
        self._key = RSAKey.import_key(private_key_pem)
        self.kid = self._key.thumbprint()

        self._lock = threading.Lock()
        self._messages: list[AcceptedMessage] = []
        self._attempts: list[Attempt] = []
        self._accepted_ids: set[str] = set()
        self._scripted: list[ScriptedResponse] = []
        self._commands: deque[tuple[list[dict[str, Any]], str | None]] = deque()
        self._duplicates = 0

        self._server = ServerThread(_ReceiverHandler, None, self._attach, port)

    # -- lifecycle -------------------------------------------------------------------

    def _attach(self, server: LoopbackServer) -> None:
        server.app = self  # type: ignore[attr-defined]

    def start(self) -> Receiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Where the agent POSTs batches (MHQ_WEBHOOK_URL)."""
        return f"http://127.0.0.1:{self.port}/webhook"

    @property
    def heartbeat_url(self) -> str:
        """A separate heartbeat endpoint (MHQ_HEARTBEAT_URL). /webhook also works."""
        return f"http://127.0.0.1:{self.port}/heartbeat"

    def refuse_connections(self) -> None:
        """Close the listening socket and open connections, as if MHQ were down."""
        self._server.stop()

    def accept_connections(self) -> None:
        """Listen again on the same port."""
        self._server.start()

    # -- scripting -------------------------------------------------------------------

    def enqueue(
        self,
        status: int,
        *,
        headers: Headers | None = None,
        body: Any = None,
        for_type: str | None = None,
        times: int = 1,
    ) -> None:
        """Send status to the next `times` requests instead of the normal response.

        With for_type, only messages of that type count, so they must decrypt. A
        scripted response never stores the message.
        """
        scripted = ScriptedResponse(status, dict(headers or {}), body, for_type, times)
        with self._lock:
            self._scripted.append(scripted)

    def queue_commands(
        self, commands: list[dict[str, Any]], *, secret: str | None = None
    ) -> None:
        """Send commands in the response to the next accepted heartbeat.

        The response is signed with the client secret, or with `secret` to forge it.
        """
        with self._lock:
            self._commands.append((list(commands), secret))

    # -- what was received -----------------------------------------------------------

    def messages(self) -> list[AcceptedMessage]:
        with self._lock:
            return list(self._messages)

    def batches(self) -> list[AcceptedMessage]:
        return [message for message in self.messages() if message.type == BATCH]

    def heartbeats(self) -> list[AcceptedMessage]:
        return [message for message in self.messages() if message.type == HEARTBEAT]

    def records(
        self, entity: str | None = None, provider: str | None = None
    ) -> list[ReceivedRecord]:
        """Return every record of every accepted batch, in arrival order."""
        found = []
        for batch in self.batches():
            batch_provider = str(batch.data.get("provider"))
            for name, records in batch.data.get("records", {}).items():
                if entity is not None and name != entity:
                    continue
                for record in records:
                    record_provider = str(record.get("provider", batch_provider))
                    if provider is not None and record_provider != provider:
                        continue
                    found.append(
                        ReceivedRecord(name, record_provider, record, batch.message_id)
                    )
        return found

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self._duplicates

    def reset(self) -> None:
        """Forget everything received and scripted (accepted ids included)."""
        with self._lock:
            self._messages.clear()
            self._attempts.clear()
            self._accepted_ids.clear()
            self._scripted.clear()
            self._commands.clear()
            self._duplicates = 0

    # -- request handling ------------------------------------------------------------

    def _serve(self, handler: _ReceiverHandler) -> None:
        received_at = time.time()
        body = handler.read_body()
        headers = {name.lower(): value for name, value in handler.headers.items()}
        path = handler.path.split("?", 1)[0]

        if handler.command != "POST" or path not in PATHS:
            status = 404 if path not in PATHS else 405
            reply = Reply.json(
                status, {"error": f"{status} {HTTPStatus(status).phrase}"}
            )
            self._log_attempt(
                headers, reply.status, received_at, path, _Checked(), body
            )
            handler.send_reply(reply)
            return

        try:
            checked = self._check(headers, body)
            reply, scripted = self._respond(headers, body, checked, received_at)
        except Exception:
            # A bug in the receiver returns 500 instead of dropping the connection,
            # which the agent would treat as MHQ being down.
            logger.exception(
                "receiver failed on webhook-id %s", headers.get("webhook-id")
            )
            checked, scripted = _Checked(), False
            reply = Reply.json(500, {"error": "receiver error"})

        # Log before sending, so a test that has the response also sees the attempt.
        self._log_attempt(
            headers, reply.status, received_at, path, checked, body, scripted
        )
        handler.send_reply(reply)

    def _respond(
        self, headers: Headers, body: bytes, checked: _Checked, received_at: float
    ) -> tuple[Reply, bool]:
        """Pick the response: scripted, too large, rejected, duplicate or accepted."""
        scripted = self._take_scripted(checked.message_type)
        if scripted is not None:
            return _scripted_reply(scripted), True

        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            limit = f"body of {len(body)} bytes exceeds {self.max_body_bytes}"
            return Reply.json(413, {"error": limit}), False
        if checked.failure is not None:
            failure = checked.failure
            return Reply.json(failure.status, {"error": failure.message}), False

        assert checked.envelope is not None and checked.protected is not None
        message = AcceptedMessage(
            checked.envelope,
            headers,
            received_at,
            checked.protected,
            hashlib.sha256(body).hexdigest(),
        )
        return self._accept(message), False

    def _accept(self, message: AcceptedMessage) -> Reply:
        with self._lock:
            if message.message_id in self._accepted_ids:
                self._duplicates += 1
                duplicate = {"error": "duplicate webhook-id", "id": message.message_id}
                return Reply.json(self.duplicate_status, duplicate)
            self._accepted_ids.add(message.message_id)
            self._messages.append(message)
            pending = (
                self._commands.popleft()
                if message.type == HEARTBEAT and self._commands
                else None
            )

        if message.type == HEARTBEAT:
            commands, secret = pending if pending else ([], None)
            return self._heartbeat_reply(commands, secret)
        return Reply.json(200, {"accepted": message.message_id})

    def _heartbeat_reply(
        self, commands: list[dict[str, Any]], secret: str | None
    ) -> Reply:
        body = json.dumps({"commands": commands}).encode("utf-8")
        headers = sign_response(secret or self._client_secret, body)
        headers["Content-Type"] = "application/json"
        return Reply(200, body, headers)

    def _take_scripted(self, message_type: str | None) -> ScriptedResponse | None:
        with self._lock:
            for scripted in self._scripted:
                if scripted.for_type is not None and scripted.for_type != message_type:
                    continue
                scripted.times -= 1
                if scripted.times <= 0:
                    self._scripted.remove(scripted)
                return scripted
        return None

    def _log_attempt(
        self,
        headers: Headers,
        status: int,
        received_at: float,
        path: str,
        checked: _Checked,
        body: bytes,
        scripted: bool = False,
    ) -> None:
        error = checked.failure.message if checked.failure else None
        attempt = Attempt(
            headers.get("webhook-id"),
            status,
            received_at,
            path,
            checked.message_type,
            error,
            len(body),
            scripted,
            hashlib.sha256(body).hexdigest(),
        )
        with self._lock:
            self._attempts.append(attempt)

    # -- checks ----------------------------------------------------------------------

    def _check(self, headers: Headers, body: bytes) -> _Checked:
        """Run the checks in order. The first failure decides the status."""
        try:
            _check_headers(headers, self.client_id)
            self._check_signature(headers, body)
            protected, plaintext = self._decrypt(body)
            envelope = _parse_envelope(plaintext, headers["webhook-id"])
        except Rejected as failure:
            return _Checked(failure=failure)
        return _Checked(envelope=envelope, protected=protected)

    def _check_signature(self, headers: Headers, body: bytes) -> None:
        """Verify with the standardwebhooks package and again with hmac directly."""
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except standardwebhooks.WebhookVerificationError as error:
            raise Rejected(401, f"signature verification failed: {error}") from None

        message_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        signed = f"{message_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._secret_bytes, signed, hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode("ascii")
        offered = [
            part.split(",", 1)[1]
            for part in headers["webhook-signature"].split()
            if part.startswith("v1,")
        ]
        if not any(hmac.compare_digest(expected, value) for value in offered):
            raise Rejected(
                401, "no v1 signature matches HMAC-SHA256 of id.timestamp.body"
            )

    def _decrypt(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        try:
            token = body.decode("ascii").strip()
            result = jwe.decrypt_compact(token, self._key, algorithms=JWE_ALGORITHMS)
        except (JoseError, ValueError, TypeError, KeyError, IndexError) as error:
            raise Rejected(400, f"JWE decryption failed: {error!r}") from None

        protected = dict(result.protected)
        expected = {
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "zip": "DEF",
            "cty": "application/json",
            "kid": self.kid,
        }
        if protected != expected:
            raise Rejected(400, f"JWE protected header {protected} is not {expected}")
        if result.plaintext is None:
            raise Rejected(400, "JWE has no plaintext")
        return protected, result.plaintext


class _ReceiverHandler(JSONRequestHandler):
    server_version = "MHQ-Receiver/1.0"

    def _dispatch(self) -> None:
        app = cast(Receiver, self.server.app)  # type: ignore[attr-defined]
        app._serve(self)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


def sign_response(secret: str, body: bytes) -> Headers:
    """Return Standard Webhooks headers that sign a response body with secret."""
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign(message_id, now, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def _check_headers(headers: Headers, client_id: str) -> None:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/jose":
        raise Rejected(
            400, f"Content-Type must be application/jose, not {media_type!r}"
        )
    if headers.get("x-mhq-client-id") != client_id:
        raise Rejected(401, "X-MHQ-Client-Id is missing or unknown")
    if not headers.get("user-agent", "").startswith("mhq-sync-agent/"):
        raise Rejected(400, "User-Agent must start with mhq-sync-agent/")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not headers.get(name):
            raise Rejected(401, f"missing {name} header")


def _parse_envelope(plaintext: bytes, webhook_id: str) -> dict[str, Any]:
    """Parse and check the envelope against the message contract."""
    try:
        envelope = json.loads(plaintext)
    except (ValueError, UnicodeDecodeError) as error:
        raise Rejected(400, f"plaintext is not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise Rejected(400, "envelope must be a JSON object")

    if envelope.get("schema_version") != 1 or isinstance(
        envelope.get("schema_version"), bool
    ):
        raise Rejected(
            400, f"schema_version must be 1, not {envelope.get('schema_version')!r}"
        )
    if envelope.get("message_id") != webhook_id:
        raise Rejected(400, "message_id differs from the webhook-id header")
    if envelope.get("type") not in MESSAGE_TYPES:
        raise Rejected(400, f"unknown message type {envelope.get('type')!r}")
    for name in ("agent_id", "agent_version", "created_at"):
        if not isinstance(envelope.get(name), str) or not envelope[name]:
            raise Rejected(400, f"envelope field {name} must be a non-empty string")
    if not isinstance(envelope.get("data"), dict):
        raise Rejected(400, "envelope field data must be an object")

    _check_timestamps(envelope, "envelope")
    if envelope["type"] == BATCH:
        _check_batch(envelope["data"])
    return envelope


def _check_timestamps(value: Any, where: str) -> None:
    """Every *_at field is null or RFC 3339 in UTC with a Z."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_timestamps(item, f"{where}[{index}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key.endswith("_at") and item is not None:
            if not isinstance(item, str) or not _RFC3339_UTC.match(item):
                raise Rejected(
                    400, f"{where}.{key} is not RFC 3339 UTC with Z: {item!r}"
                )
        else:
            _check_timestamps(item, f"{where}.{key}")


def _check_batch(data: dict[str, Any]) -> None:
    if data.get("provider") not in PROVIDERS:
        raise Rejected(400, f"unknown provider {data.get('provider')!r}")
    records = data.get("records")
    if not isinstance(records, dict):
        raise Rejected(400, "data.records must be an object of arrays")

    for entity, items in records.items():
        if entity not in ENTITIES:
            raise Rejected(400, f"unknown record array {entity!r}")
        if not isinstance(items, list):
            raise Rejected(400, f"data.records.{entity} must be an array")
        for index, record in enumerate(items):
            where = f"data.records.{entity}[{index}]"
            if not isinstance(record, dict):
                raise Rejected(400, f"{where} must be an object")
            if not isinstance(record.get("id"), str):
                raise Rejected(400, f"{where}.id must be a string")
            if not isinstance(record.get("provider"), str):
                raise Rejected(400, f"{where}.provider must be a string")


def _scripted_reply(scripted: ScriptedResponse) -> Reply:
    if isinstance(scripted.body, bytes | str):
        raw = (
            scripted.body.encode() if isinstance(scripted.body, str) else scripted.body
        )
        headers = {"Content-Type": "text/plain; charset=utf-8", **scripted.headers}
        return Reply(scripted.status, raw, headers)
    payload = scripted.body
    if payload is None:
        payload = {"status": scripted.status, "scripted": True}
    return Reply.json(scripted.status, payload, scripted.headers)


# -- command line ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve a receiver with fresh keys until Ctrl-C, printing what arrives."""
    parser = argparse.ArgumentParser(description="Reference MHQ receiver on 127.0.0.1.")
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port, or 0 for a free one"
    )
    parser.add_argument("--client-id", default="client-test")
    args = parser.parse_args(argv)

    keys = make_receiver_keys(args.client_id)
    receiver = Receiver(
        keys.private_pem, keys.client_secret, keys.client_id, port=args.port
    )
    with receiver:
        # The secret goes to stdout only, for the person who started the receiver.
        print(f"MHQ_WEBHOOK_URL={receiver.url}")
        print(f"MHQ_CLIENT_ID={keys.client_id}")
        print(f"MHQ_CLIENT_SECRET={keys.client_secret}")
        print("MHQ_PUBLIC_KEY:")
        print(keys.public_pem, flush=True)
        _print_attempts(receiver)


def _print_attempts(receiver: Receiver) -> None:
    stop = install_stop_handlers()
    shown = 0
    while not stop.wait(0.5):
        attempts = receiver.attempts()
        for attempt in attempts[shown:]:
            detail = attempt.error or attempt.message_type or ""
            print(f"{attempt.status} {attempt.webhook_id} {detail}", flush=True)
        shown = len(attempts)
    print("Stopped.")


if __name__ == "__main__":
    main()
