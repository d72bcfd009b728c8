"""``twofa dev``: the whole stack on one machine, from wheels alone.

Starts the embedded PostgreSQL (data under ``.twofa/``) and the Tansu broker unless
``TWOFA_DATABASE_URL`` / ``TWOFA_KAFKA_BOOTSTRAP_SERVERS`` point elsewhere, applies the
migrations, starts each twofa process as a child, prints where everything is, and on
Ctrl-C stops every child and server it started.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from shared.db import ensure_database, ensure_service_role, migrate
from shared.devservers import EmbeddedBroker, EmbeddedPostgres

__all__ = ["run"]

SERVICE_ROLE = "twofa_service"
DATABASE = "twofa"


def _say(message: str) -> None:
    print(f"twofa dev: {message}", flush=True)


def dev_keys(root: Path) -> dict[str, str]:
    """Development keys, made once and kept in ``.twofa/dev.env`` so data stays readable."""
    path = root / "dev.env"
    if not path.exists():
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        path.write_text(
            "# Development keys for `twofa dev` only. Never use them in production.\n"
            f"TWOFA_ENCRYPTION_KEYS=dev-local:{key}\n"
            "TWOFA_ENCRYPTION_ACTIVE_KEY_ID=dev-local\n"
        )
        path.chmod(0o600)
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def run(data_dir: str) -> int:
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: v for k, v in dev_keys(root).items() if k not in os.environ}}
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    with ExitStack() as stack:
        if not os.environ.get("TWOFA_DATABASE_URL"):
            _say("starting embedded PostgreSQL …")
            pg = stack.enter_context(EmbeddedPostgres(root / "postgres"))
            asyncio.run(ensure_database(pg.dsn(), DATABASE))
            admin = pg.dsn(DATABASE)
            env["TWOFA_MIGRATION_DATABASE_URL"] = admin
            env["TWOFA_DATABASE_URL"] = pg.dsn(DATABASE, user=SERVICE_ROLE)
        else:
            admin = env.get("TWOFA_MIGRATION_DATABASE_URL") or env["TWOFA_DATABASE_URL"]
        if not os.environ.get("TWOFA_KAFKA_BOOTSTRAP_SERVERS"):
            _say("starting embedded Kafka-protocol broker (Tansu) …")
            broker = stack.enter_context(EmbeddedBroker(log_path=root / "broker.log"))
            env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        _say("applying migrations …")
        applied = asyncio.run(migrate(admin))
        _say(f"{len(applied)} new migration(s) applied")
        if not os.environ.get("TWOFA_DATABASE_URL"):
            asyncio.run(ensure_service_role(admin, SERVICE_ROLE))

        for name, argv in (("relay", ["relay"]),):
            _say(f"starting {name} …")
            proc = subprocess.Popen(  # noqa: S603 — our own entry point
                [sys.executable, "-m", "shared.cli", *argv], env=env
            )
            children.append((name, proc))

        rows = [
            ("PostgreSQL", env["TWOFA_DATABASE_URL"]),
            ("Kafka bootstrap", env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"]),
            ("Kafka topic", env.get("TWOFA_KAFKA_TOPIC", "twofa.events.v1")),
            *((f"{name} (pid)", str(proc.pid)) for name, proc in children),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows) + "\n", flush=True)
        _say("running; press Ctrl-C to stop everything")
        return _supervise(children)
    return 0


def _supervise(children: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    while not stopping:
        for name, proc in children:
            if proc.poll() is not None:
                _say(f"{name} exited with code {proc.returncode}; stopping the stack")
                code = 1
                stopping = True
        time.sleep(0.2)
    _say("stopping …")
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for _, proc in children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _say("stopped")
    return code
