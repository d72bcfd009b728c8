"""What a ``twofa dev`` run started, recorded under its data directory, so that a later
start (or ``twofa dev --stop``) finds what an earlier run left and stops it; and the
check that the ports it wants are free before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from shared.devtools.servers import process_alive, running_postmaster, stop_postgres

__all__ = [
    "PortTaken",
    "Run",
    "holder_of",
    "listens",
    "stop_leftovers",
    "supervisor_alive",
    "taken_ports",
]

RECORD = "run.json"


@dataclass
class Run:
    """The supervisor's pid and the pids and ports of what it started."""

    pid: int
    children: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def save(self, root: Path) -> None:
        (root / RECORD).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, root: Path) -> Run | None:
        try:
            raw = json.loads((root / RECORD).read_text())
            return cls(int(raw["pid"]), dict(raw["children"]), dict(raw["ports"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def forget(root: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (root / RECORD).unlink()


def supervisor_alive(run: Run) -> bool:
    """Is the recorded ``twofa dev`` itself still running?"""
    if not process_alive(run.pid):
        return False
    with contextlib.suppress(psutil.Error):
        return "dev" in psutil.Process(run.pid).cmdline()
    return False


def stop_leftovers(root: Path, postgres_dir: Path | None) -> list[str]:
    """Stop what a dead run left on ``root``: its processes, then its PostgreSQL; what was
    stopped, named. (A run whose supervisor lives is not a leftover: see ``Run``.)"""
    stopped: list[str] = []
    run = Run.load(root)
    if run is not None:
        left = [(name, pid) for name, pid in run.children.items() if process_alive(pid)]
        for name, pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            stopped.append(f"{name} (pid {pid})")
        deadline = time.monotonic() + 10
        for _, pid in left:
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    if postgres_dir is not None:
        postmaster = running_postmaster(postgres_dir)
        if postmaster is not None and stop_postgres(postgres_dir):
            stopped.append(f"PostgreSQL (pid {postmaster})")
    Run.forget(root)
    return stopped


@dataclass(frozen=True)
class PortTaken:
    port: int
    holder: str | None  # "pid 123 (python3 -m http.server)", when it can be seen


def taken_ports(ports: list[int]) -> list[PortTaken]:
    """The ports of ``ports`` that something already listens on (127.0.0.1)."""
    taken = []
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(PortTaken(port, holder_of(port)))
    return taken


def holder_of(port: int) -> str | None:
    """Who listens on ``port``, as far as this user may see."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return None
                with contextlib.suppress(psutil.Error):
                    command = " ".join(psutil.Process(conn.pid).cmdline())[:120]
                    return f"pid {conn.pid} ({command})"
                return f"pid {conn.pid}"
    return None


def listens(pid: int, port: int) -> bool:
    """Does process ``pid`` itself listen on ``port``?"""
    with contextlib.suppress(psutil.Error):
        return any(
            c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
            for c in psutil.Process(pid).net_connections(kind="tcp")
        )
    return False
