"""A whole twofa stack as real processes on 127.0.0.1, for fault injection and attacks.

Its own embedded PostgreSQL and Tansu broker (so a fault test may restart them without
disturbing other tests), two relays and two replicas of each service by default. Every
process writes its log to a file under ``root``, which the secrets sweep reads. Nothing
listens beyond 127.0.0.1 and ``stop()`` ends every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from shared.devtools.keys import dev_keys_for
from shared.devtools.logins import ensure_service_logins, login_dsn
from shared.devtools.servers import EmbeddedBroker, EmbeddedPostgres, free_port
from shared.platform.db import ensure_database, migrate

__all__ = ["SERVICES", "Stack"]

SERVICES = ("auth", "enrolment", "audit")
DATABASE = "twofa"


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Stack:
    root: Path
    replicas: int = 2
    relays: int = 2
    settings: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    admin_dsn: str = ""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.root / "postgres")
        self.broker = EmbeddedBroker(log_path=self.root / "broker.log")

    # -- the whole stack -------------------------------------------------------------

    def start(self) -> Stack:
        self.postgres.start()
        asyncio.run(ensure_database(self.postgres.dsn(), DATABASE))
        self.admin_dsn = self.postgres.dsn(DATABASE)
        asyncio.run(migrate(self.admin_dsn))
        asyncio.run(ensure_service_logins(self.admin_dsn))
        self.broker.start()
        ports = {
            f"{service}-{copy}": free_port()
            for service in SERVICES
            for copy in range(1, self.replicas + 1)
        }
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")},
            # Each process adds its own keys and database login: process_env.
            "TWOFA_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "TWOFA_KAFKA_FETCH_MAX_WAIT_MS": "10",
            "TWOFA_RELAY_POLL_INTERVAL_SECONDS": "0.2",
            "TWOFA_RELAY_STANDBY_RETRY_SECONDS": "0.5",
            "TWOFA_LOG_LEVEL": "DEBUG",
            "TWOFA_OPEN_REGISTRATION": "true",
            "TWOFA_ENROLMENT_URL": f"http://127.0.0.1:{ports['enrolment-1']}",
            # Cheaper hashing so a 2-core machine can carry the load and the attacks.
            "TWOFA_ARGON2_TIME_COST": "1",
            "TWOFA_ARGON2_MEMORY_KIB": "8192",
            "TWOFA_ARGON2_PARALLELISM": "1",
            **self.settings,
        }
        for copy in range(1, self.relays + 1):
            self._add(f"relay-{copy}", ["relay"])
        for name, port in ports.items():
            self._add(name, ["serve", name.rsplit("-", 1)[0], "--port", str(port)], port)
        for process in self.processes.values():
            self.start_process(process.name)
        for process in self.processes.values():
            if process.port is not None:
                self.wait_ready(process.name)
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            if process.alive:
                assert process.popen is not None
                process.popen.terminate()
        for process in self.processes.values():
            if process.popen is not None:
                try:
                    process.popen.wait(15)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait()
        self.broker.stop()
        self.postgres.stop()

    # -- processes -------------------------------------------------------------------

    def process_env(self, name: str) -> dict[str, str]:
        """What process ``name`` starts with: the stack's settings, its own development
        keys and no other key, its own database login (named after it, so SQL can tell
        whose connections they are: the active relay), its own metrics port."""
        kind = name.split(".", 1)[0].rsplit("-", 1)[0]  # auth-1, enrolment.late-1
        dsn = login_dsn(self.admin_dsn, kind) + f"&application_name={name}"
        return {
            **self.env,
            **dev_keys_for(self.root, kind),
            "TWOFA_DATABASE_URL": dsn,
            # Its own metrics port: two replicas of a kind run on this host.
            "TWOFA_METRICS_PORT": str(free_port()),
        }

    def _add(self, name: str, argv: list[str], port: int | None = None) -> None:
        self.processes[name] = Process(name, argv, self.root / "logs" / f"{name}.log", port)

    def start_process(self, name: str, settings: dict[str, str] | None = None) -> None:
        process = self.processes[name]
        process.log.parent.mkdir(parents=True, exist_ok=True)
        with process.log.open("ab") as log:
            process.popen = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *process.argv],
                env={**self.process_env(name), **(settings or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_late_replica(self, service: str, **settings: str) -> str:
        """One more replica of ``service`` (``<service>.late-N``), started now with the
        same environment (plus ``settings``) on a free port; left out of
        ``urls(service)``. Its name: stop it with ``kill`` (``stop()`` stops it too)."""
        late = sum(1 for name in self.processes if name.startswith(f"{service}.late-"))
        name = f"{service}.late-{late + 1}"
        self._add(name, ["serve", service, "--port", str(port := free_port())], port)
        self.start_process(name, settings)
        return name

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        if process.popen is not None and process.alive:
            process.popen.send_signal(sig)
            process.popen.wait(30)

    def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self.start_process(name)

    def wait_ready(self, name: str, within: float = 60.0) -> None:
        url = f"{self.url(name)}/readyz"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.processes[name].alive:
                raise AssertionError(f"{name} exited:\n{self.log_text(name)[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready within {within} s")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.processes[name].port}"

    def urls(self, service: str) -> list[str]:
        return [
            self.url(p.name)
            for p in self.processes.values()
            if p.port is not None and p.name.rsplit("-", 1)[0] == service
        ]

    async def active_relays(self) -> list[str]:
        """The relays holding the relay lock now (one, or none during a takeover)."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            rows = await conn.fetch(
                """SELECT DISTINCT a.application_name FROM pg_locks l
                   JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.granted
                     AND a.application_name LIKE 'relay-%'"""
            )
        finally:
            await conn.close()
        return sorted(row["application_name"] for row in rows)

    # -- servers ---------------------------------------------------------------------

    def restart_broker(self, down_for: float = 0.0) -> None:
        """SIGKILL the broker, wait, start it again on the same port (memory storage:
        its topics, records and group offsets are gone, as after losing a broker's disk)."""
        self.broker.kill()
        time.sleep(down_for)
        self.broker.start()

    def restart_postgres(self, mode: str = "immediate") -> None:
        """``pg_ctl restart``; ``immediate`` aborts every backend, like a crash."""
        self.postgres.restart(mode)

    # -- what it left behind ---------------------------------------------------------

    def log_text(self, name: str | None = None) -> str:
        names = [name] if name else list(self.processes)
        return "\n".join(
            self.processes[n].log.read_text(errors="replace")
            for n in names
            if self.processes[n].log.exists()
        )
