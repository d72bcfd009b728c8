"""The stack a benchmark run measures: embedded servers, databases, service processes.

One ``Stack`` per run: the embedded PostgreSQL (and the Tansu broker when a part needs
one) in a temporary directory, a fresh migrated database per part, and the twofa
processes started as ``twofa serve``/``twofa relay`` do, each with a log file. Leaving
the ``with`` block stops every process and server it started, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared.devtools.keys import dev_keys
from shared.devtools.logins import ensure_service_logins, login_dsn
from shared.devtools.servers import EmbeddedBroker, EmbeddedPostgres, free_port
from shared.messaging.kafka import ensure_topics
from shared.platform.config import Settings
from shared.platform.db import migrate
from shared.platform.key_holders import without_foreign_keys

__all__ = ["Database", "Process", "Stack"]

# Consumers wait at most this long for a fetch (the setting for Tansu).
FETCH_MAX_WAIT_MS = "10"


def _with_database(dsn: str, database: str, user: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{quote(user)}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(database), parts.query, ""))


@dataclass(frozen=True, slots=True)
class Database:
    """A fresh migrated database: the owner's URL (seeding) and auth's login URL (the
    in-process writers of account and twofactor streams); ``login`` gives the others."""

    name: str
    admin_url: str
    service_url: str

    def login(self, process: str) -> str:
        """The URL of ``process``'s own login on this database."""
        return login_dsn(self.service_url, process)


@dataclass(slots=True)
class Process:
    """A child process of the run, with the loopback port it serves on (if any)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """Embedded PostgreSQL (and broker) plus every process a run starts; stops them all."""

    def __init__(self, *, broker: bool) -> None:
        self.want_broker = broker
        self._tmp = tempfile.TemporaryDirectory(prefix="twofa-bench-")
        self.workdir = Path(self._tmp.name)
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None
        self.processes: list[Process] = []
        self.keys: dict[str, str] = {}

    # Lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.postgres = EmbeddedPostgres(self.workdir / "postgres", delete_on_stop=True)
            self.postgres.start()
            if self.want_broker:
                self.broker = EmbeddedBroker(log_path=self.workdir / "broker.log").start()
            self.keys = dev_keys(self.workdir)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        self._tmp.cleanup()

    # PostgreSQL -------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        """The server's admin URL (database ``postgres``)."""
        assert self.postgres is not None
        return self.postgres.dsn()

    @property
    def socket_dir(self) -> str:
        assert self.postgres is not None
        return self.postgres.socket_dir

    async def database(self, prefix: str = "twofa_bench") -> Database:
        """A new database, migrated, with the services' role (dropped with the server)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        admin = _with_database(self.admin_url, name)
        await migrate(admin)
        await ensure_service_logins(admin)
        return Database(name, admin, login_dsn(admin, "auth"))

    async def empty_database(self, prefix: str) -> str:
        """A new database with no schema (for the peer library); its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    # Broker -----------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.broker is None:
            raise RuntimeError("this part was not given a broker")
        return self.broker.bootstrap_servers

    async def topic(self, partitions: int = 4) -> str:
        """A fresh topic (and its dead-letter topic) nobody else uses."""
        name = f"twofa.bench.{uuid.uuid4().hex[:10]}"
        await ensure_topics(self.bootstrap_servers, [name, name + ".dlq"], partitions=partitions)
        return name

    # Processes --------------------------------------------------------------------------

    def env(self, database: Database, **overrides: str) -> dict[str, str]:
        """The environment of a twofa process on ``database`` (plus ``overrides``)."""
        env = {
            **os.environ,
            **self.keys,
            "TWOFA_DATABASE_URL": database.service_url,
            "TWOFA_MIGRATION_DATABASE_URL": database.admin_url,
            "TWOFA_KAFKA_FETCH_MAX_WAIT_MS": FETCH_MAX_WAIT_MS,
            "TWOFA_LOG_LEVEL": os.environ.get("TWOFA_LOG_LEVEL", "WARNING"),
        }
        if self.broker is not None:
            env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
        else:  # a part with no broker: the services run without consumers, as told
            env.pop("TWOFA_KAFKA_BOOTSTRAP_SERVERS", None)
            env["TWOFA_WITHOUT_BROKER"] = "true"
        env.update(overrides)
        return env

    @staticmethod
    def settings(env: Mapping[str, str]) -> Settings:
        """The ``Settings`` a process started with ``env`` loads."""
        values: dict[str, Any] = {
            k.removeprefix("TWOFA_").lower(): v for k, v in env.items() if k.startswith("TWOFA_")
        }
        return Settings(**values)

    def start(
        self, name: str, argv: list[str], env: Mapping[str, str], role: str | None = None
    ) -> Process:
        """Start ``argv``; as twofa's process ``role``, with only its keys and its own login."""
        if role is not None:
            own = without_foreign_keys(env, role)
            own["TWOFA_DATABASE_URL"] = login_dsn(own["TWOFA_DATABASE_URL"], role)
            env = own
        log_path = self.workdir / f"{name}-{len(self.processes)}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                # Each process its own metrics port: several of a kind may run at once.
                env={**env, "TWOFA_METRICS_PORT": str(free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    async def serve(self, service: str, env: Mapping[str, str], *, ready: bool = True) -> Process:
        """``twofa serve SERVICE`` on a free loopback port, once ``/readyz`` answers 200
        (its consumers caught up); ``ready=False``: at once, to watch it catch up."""
        port = free_port()
        process = self.start(
            service, ["-m", "services.cli", "serve", service, "--port", str(port)], env, service
        )
        process.port = port
        if ready:
            await self.wait_ready(process)
        return process

    async def serve_module(self, name: str, module: str, env: Mapping[str, str]) -> Process:
        """``python -m MODULE --port P`` (a bench server), once ``/readyz`` answers."""
        port = free_port()
        process = self.start(name, ["-m", module, "--port", str(port)], env)
        process.port = port
        await self.wait_ready(process)
        return process

    def relay(self, env: Mapping[str, str]) -> Process:
        return self.start("relay", ["-m", "services.cli", "relay"], env, "relay")

    async def wait_ready(self, process: Process, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        url = f"http://127.0.0.1:{process.port}/readyz"
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited while starting:\n{process.log_tail()}")
            if await asyncio.to_thread(_answers, url):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{process.name} was not ready in {within:.0f}s:\n{process.log_tail()}")

    def stop(self, process: Process) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self.processes.remove(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 — loopback http
            return bool(answer.status == 200)
    except OSError:
        return False
