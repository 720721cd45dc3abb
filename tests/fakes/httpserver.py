"""Threaded HTTP/1.1 server on 127.0.0.1 shared by the fake GitLab and the receiver.

Both fakes need the same things from the standard library server: a free port, an
optional TLS layer, keep-alive connections that can be cut when the test stops the
server, and faults that close a connection without a reply.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
_HANDSHAKE_TIMEOUT_S = 10.0

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    """One HTTP response before it is written to the socket."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Build a JSON reply with the Content-Type GitLab and MHQ both use."""
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return cls(status, body, all_headers)


class LoopbackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int,
        handler_class: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), handler_class)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Wrap the socket in TLS in the handler thread, so a slow client never
        blocks the accept loop, then run the handler."""
        connection: socket.socket = request
        if self.ssl_context is not None:
            try:
                connection = self._wrap_tls(request)
            except (ssl.SSLError, OSError) as error:
                logger.debug("TLS handshake with %s failed: %s", client_address, error)
                return

        with self._connections_lock:
            self._connections.add(connection)
        try:
            self.RequestHandlerClass(connection, client_address, self)  # type: ignore[arg-type]
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            if connection is not request:
                _close_quietly(connection)

    def _wrap_tls(self, request: socket.socket) -> socket.socket:
        assert self.ssl_context is not None
        request.settimeout(_HANDSHAKE_TIMEOUT_S)
        wrapped = self.ssl_context.wrap_socket(request, server_side=True)
        wrapped.settimeout(None)
        return wrapped

    def close_connections(self) -> None:
        """Shut down every open connection, so keep-alive handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log handler errors at debug level, since clients that hang up are normal."""
        logger.debug(
            "connection from %s ended with an error", client_address, exc_info=True
        )


def _close_quietly(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.close()


class ServerThread:
    """Run a LoopbackServer in a daemon thread. A restart reuses the same port."""

    def __init__(
        self,
        handler_class: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None = None,
        configure: Callable[[LoopbackServer], None] | None = None,
        port: int = 0,
    ) -> None:
        self._handler_class = handler_class
        self._ssl_context = ssl_context
        self._configure = configure
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen on the remembered port, or on a free one the first time."""
        if self._server is not None:
            return

        server = LoopbackServer(self.port, self._handler_class, self._ssl_context)
        if self._configure is not None:
            self._configure(server)
        self.port = server.server_address[1]
        self._server = server

        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self._handler_class.__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every open connection."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return

        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)

        self._server = None
        self._thread = None


class JSONRequestHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, quiet logging, helpers to write a Reply."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeServer/1.0"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits
    # for the client's delayed ACK, adding about 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def read_body(self) -> bytes:
        """Read the request body announced by Content-Length."""
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b""
        return self.rfile.read(length)

    def send_reply(self, reply: Reply, *, truncate: bool = False) -> None:
        """Write the reply. With truncate, announce the full length but send half."""
        reason = _reason(reply.status)
        self.send_response(reply.status, reason)

        headers = dict(reply.headers)
        headers["Content-Length"] = str(len(reply.body))
        for name, value in headers.items():
            self.send_header(name, value)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

        body = reply.body[: len(reply.body) // 2] if truncate else reply.body
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def reset_connection(self) -> None:
        """Close the connection without sending a response.

        The shutdown sends FIN at once, and SO_LINGER 0 turns the final close into a
        TCP reset. Clients see "connection closed without response".
        """
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.shutdown(socket.SHUT_RDWR)


def install_stop_handlers() -> threading.Event:
    """Return an event that SIGINT or SIGTERM sets, for the command-line servers.

    Setting the handlers explicitly also covers a shell that started the process
    in the background, where SIGINT is ignored by default.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"
