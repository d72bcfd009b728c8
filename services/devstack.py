"""``twofa dev``: the whole stack on one machine, from wheels alone.

Starts the embedded PostgreSQL (data under ``.twofa/``) and the Tansu broker unless
``TWOFA_DATABASE_URL`` / ``TWOFA_KAFKA_BOOTSTRAP_SERVERS`` point elsewhere, applies the
migrations, starts each twofa process as a child, prints where everything is, and on
Ctrl-C stops every child and server it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from shared.devtools.keys import dev_keys_for
from shared.devtools.logins import SERVICE_LOGINS, ensure_service_logins, login_dsn
from shared.devtools.runs import Run, listens, stop_leftovers, supervisor_alive, taken_ports
from shared.devtools.servers import EmbeddedBroker, EmbeddedPostgres, die_with_parent, free_port
from shared.platform.config import Settings
from shared.platform.db import ensure_database, migrate
from shared.platform.key_holders import without_foreign_keys

__all__ = ["DEFAULT_PORTS", "instances", "parse_replicas", "run", "stop"]

DEFAULT_PORTS = {"auth": 8001, "enrolment": 8002, "audit": 8003}
DATABASE = "twofa"


def _say(message: str) -> None:
    print(f"twofa dev: {message}", flush=True)


def _wait_ready(name: str, port: int, children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Until ``name``, the process this run started, listens on ``port`` and is ready:
    ``/readyz`` 200, its consumers caught up with the topic (whatever else may answer)."""
    ours = dict(children)[name]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for _, proc in children):
            raise SystemExit(f"twofa dev: a process exited while {name} was starting")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200 and listens(ours.pid, port):
                    _say(f"{name} answers on port {port}, caught up")
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"twofa dev: {name} did not become ready on port {port}")


def parse_replicas(text: str) -> dict[str, int]:
    """``auth=2,audit=2`` → {"auth": 2, "audit": 2}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        if not sep or name not in DEFAULT_PORTS or not number.isdecimal():
            raise SystemExit(
                f"twofa dev: --replicas takes name=count for {', '.join(DEFAULT_PORTS)}"
            )
        if not 1 <= int(number) <= 5:
            raise SystemExit("twofa dev: between 1 and 5 copies of a service")
        counts[name] = int(number)
    return counts


def instances(ports: dict[str, int], replicas: dict[str, int]) -> list[tuple[str, str, int]]:
    """(name, service, port) of every copy: the n-th copy listens 10 ports above the last."""
    out = []
    for service, port in ports.items():
        for copy in range(replicas.get(service, 1)):
            out.append(
                (service if copy == 0 else f"{service}#{copy + 1}", service, port + 10 * copy)
            )
    return out


def run(
    data_dir: str,
    ports: dict[str, int] | None = None,
    replicas: dict[str, int] | None = None,
    demo: bool = False,
) -> int:
    ports = ports or dict(DEFAULT_PORTS)
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)  # each process adds its own keys and login (process_env)
    copies = instances(ports, replicas or {})
    refused = _claim(root, copies)
    if refused is not None:
        return refused
    stop_request = _StopRequest()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_request)
    record = Run(os.getpid(), ports={name: port for name, _, port in copies})
    record.save(root)
    with ExitStack() as stack:
        stack.callback(Run.forget, root)
        record.children.update(_start_servers(stack, root, env))
        metrics = {name: free_port() for name in ("relay", *(n for n, _, _ in copies))}
        children = _start_children(env, root, ports, copies, metrics)
        stack.callback(_stop_children, children)
        record.children.update({name: proc.pid for name, proc in children})
        record.save(root)
        for name, _, port in copies:
            _wait_ready(name, port, children)
        demo_text = _seed_demo(process_env(env, root, "auth"), root) if demo else None
        _print_where(env, copies, metrics)
        if demo_text:
            print(demo_text, flush=True)
        # From here a signal stops in order: one that lands while "ready" is printed
        # (a caller may send it the moment it reads the line) must not unwind the start.
        stop_request.supervising = True
        _say("ready; press Ctrl-C to stop everything")
        code = _supervise(children, stop_request)
    _say("stopped")
    return code


def _postgres_dir(root: Path) -> Path | None:
    return None if os.environ.get("TWOFA_DATABASE_URL") else root / "postgres"


def _claim(root: Path, copies: list[tuple[str, str, int]]) -> int | None:
    """Make way on ``root`` and the ports before anything starts; an exit code if not."""
    earlier = Run.load(root)
    if earlier is not None and earlier.pid != os.getpid() and supervisor_alive(earlier):
        _say(
            f"another twofa dev (pid {earlier.pid}) runs on {root}; stop it with "
            f"`twofa dev --stop --data-dir {root}` or Ctrl-C in its terminal"
        )
        return 2
    stopped = stop_leftovers(root, _postgres_dir(root))
    if stopped:
        _say(f"stopped what an earlier run left behind: {', '.join(stopped)}")
    taken = {t.port: t for t in taken_ports([port for _, _, port in copies])}
    for name, service, port in copies:
        if port in taken:
            holder = taken[port].holder or "a process this user cannot see"
            _say(
                f"port {port} ({name}) is taken by {holder}; stop it, or choose another "
                f"port with --{service}-port"
            )
    return 2 if taken else None


def stop(data_dir: str) -> int:
    """``twofa dev --stop``: stop the stack a run left on ``data_dir``, live or not."""
    root = Path(data_dir).resolve()
    earlier = Run.load(root)
    if earlier is not None and supervisor_alive(earlier):
        _say(f"stopping the twofa dev of pid {earlier.pid} …")
        os.kill(earlier.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while supervisor_alive(earlier) and time.monotonic() < deadline:
            time.sleep(0.2)
    stopped = stop_leftovers(root, _postgres_dir(root))
    if stopped:
        _say(f"stopped {', '.join(stopped)}")
    _say(f"nothing of twofa dev runs on {root}")
    return 0


def _start_servers(stack: ExitStack, root: Path, env: dict[str, str]) -> dict[str, int]:
    """The embedded PostgreSQL and broker, unless the environment names real ones; then
    the migrations, and each process's own database login. Returns the broker's pid."""
    started: dict[str, int] = {}
    if not os.environ.get("TWOFA_DATABASE_URL"):
        _say("starting embedded PostgreSQL …")
        pg = stack.enter_context(EmbeddedPostgres(root / "postgres", owned=True))
        guard = subprocess.Popen(  # noqa: S603 — our own module, fixed arguments
            [sys.executable, "-m", "shared.devtools.guard", str(pg.data_dir)],
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        started["postgres guard"] = guard.pid
        stack.callback(_stop_child, guard)  # it stops PostgreSQL on its way out
        stack.callback(_say, "stopping PostgreSQL …")
        asyncio.run(ensure_database(pg.dsn(), DATABASE))
        admin = pg.dsn(DATABASE)
        env["TWOFA_MIGRATION_DATABASE_URL"] = admin
        env["TWOFA_DATABASE_URL"] = admin  # each process gets its own login: process_env
        env[OWN_LOGINS] = "1"
    else:
        admin = env.get("TWOFA_MIGRATION_DATABASE_URL") or env["TWOFA_DATABASE_URL"]
    if not os.environ.get("TWOFA_KAFKA_BOOTSTRAP_SERVERS"):
        _say("starting embedded Kafka-protocol broker (Tansu) …")
        broker = stack.enter_context(EmbeddedBroker(log_path=root / "broker.log", owned=True))
        stack.callback(_say, "stopping the broker …")
        env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        if broker.pid is not None:
            started["broker"] = broker.pid
    _say("applying migrations …")
    applied = asyncio.run(migrate(admin))
    _say(f"{len(applied)} new migration(s) applied")
    if not os.environ.get("TWOFA_DATABASE_URL"):
        asyncio.run(ensure_service_logins(admin))
    return started


OWN_LOGINS = "_TWOFA_DEV_OWN_LOGINS"  # set when this run made the database and its logins


def process_env(env: dict[str, str], root: Path, process: str) -> dict[str, str]:
    """``env`` for one process: its development keys and no other key, and, on the
    embedded PostgreSQL, its own database login (a database the environment names is
    used as it is)."""
    keys = {k: v for k, v in dev_keys_for(root, process).items() if k not in os.environ}
    out = without_foreign_keys({**env, **keys}, process)
    if out.pop(OWN_LOGINS, None):
        out["TWOFA_DATABASE_URL"] = login_dsn(env["TWOFA_DATABASE_URL"], process)
        out.pop("TWOFA_MIGRATION_DATABASE_URL", None)
    return out


def _start_children(
    env: dict[str, str],
    root: Path,
    ports: dict[str, int],
    copies: list[tuple[str, str, int]],
    metrics: dict[str, int],
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """The relay and every copy of every service, as ``twofa`` child processes, each
    with its metrics listener on its own loopback port (``metrics``, by name)."""
    auth_origins = [
        f"http://{host}:{port}"
        for _, service, port in copies
        if service == "auth"
        for host in ("127.0.0.1", "localhost")
    ]
    env.setdefault("TWOFA_ENROLMENT_URL", f"http://127.0.0.1:{ports['enrolment']}")
    env.setdefault("TWOFA_PORTAL_ORIGINS", ",".join(auth_origins))
    processes = [("relay", "relay", ["relay"])] + [
        (name, service, ["serve", service, "--port", str(port)]) for name, service, port in copies
    ]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name, process, argv in processes:
        _say(f"starting {name} …")
        # In a session of its own, so a terminal's Ctrl-C reaches only twofa dev, which
        # stops everything in order; and it dies with twofa dev, however that dies.
        proc = subprocess.Popen(  # noqa: S603 — our own entry point
            [sys.executable, "-m", "services.cli", *argv],
            env={
                **process_env(env, root, process),
                "TWOFA_METRICS_HOST": "127.0.0.1",
                "TWOFA_METRICS_PORT": str(metrics[name]),
            },
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        children.append((name, proc))
    return children


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    _terminate([proc], within=60)


def _terminate(procs: list[subprocess.Popen[bytes]], within: float) -> None:
    """SIGTERM to each, then a wait of ``within`` seconds in all, then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + within
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_where(
    env: dict[str, str], copies: list[tuple[str, str, int]], metrics: dict[str, int]
) -> None:
    rows = [
        ("PostgreSQL", env["TWOFA_DATABASE_URL"]),
        *(
            [("PostgreSQL logins", ", ".join(f"{p} {u}" for p, u in SERVICE_LOGINS.items()))]
            if OWN_LOGINS in env
            else []
        ),
        ("Kafka bootstrap", env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"]),
        ("Kafka topic", env.get("TWOFA_KAFKA_TOPIC", "twofa.events.v1")),
    ]
    for name, service, port in copies:
        base = f"http://127.0.0.1:{port}"
        if service == "auth":
            rows.append((f"{name} portal page", f"{base}/portal"))
        rows += [
            (f"{name} API", base),
            (f"{name} OpenAPI docs", f"{base}/docs"),
            (f"{name} metrics", f"http://127.0.0.1:{metrics[name]}/metrics"),
        ]
    rows.append(("relay metrics", f"http://127.0.0.1:{metrics['relay']}/metrics"))
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows) + "\n", flush=True)


def _seed_demo(env: dict[str, str], root: Path) -> str:
    """The demo accounts, made on the first ``--demo`` run and kept in .twofa/."""
    from services.auth.demo import seed  # only with --demo: it loads the whole auth service

    credentials = root / "demo-credentials.txt"
    if credentials.exists():
        return credentials.read_text()
    _say("seeding the demo accounts …")
    os.environ.update(env)  # the stack's settings, as its children see them
    text = asyncio.run(seed(Settings.load(process="auth")))
    credentials.write_text(text)
    credentials.chmod(0o600)
    return text


class _StopRequest:
    """The signal handler for SIGINT, SIGTERM and SIGHUP: from the first moment of a run,
    so any of them stops it in order; before the stack is up it unwinds the start."""

    def __init__(self) -> None:
        self.requested = False
        self.supervising = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self.supervising:
            raise KeyboardInterrupt


def _supervise(children: list[tuple[str, subprocess.Popen[bytes]]], stop: _StopRequest) -> int:
    stop.supervising = True
    code = 0
    while not stop.requested:
        for name, proc in children:
            if proc.poll() is not None:
                _say(f"{name} exited with code {proc.returncode}; stopping the stack")
                code = 1
                stop.requested = True
        time.sleep(0.2)
    return code


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """The services and the relay first: they finish their batch while the broker and
    PostgreSQL still answer."""
    _say("stopping the services and the relay …")
    _terminate([proc for _, proc in children], within=10)
