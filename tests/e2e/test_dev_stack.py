"""``twofa dev`` (what ``make run`` runs): starts everything, serves a login, stops clean."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from shared.devtools.runs import holder_of
from shared.devtools.servers import free_port, running_postmaster, stop_postgres

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def start(
    data_dir: Path, ports: dict[str, int], *extra: str, via_make: bool = False
) -> subprocess.Popen[str]:
    # The embedded default: no servers named in the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    flags = [
        *("--data-dir", str(data_dir), "--auth-port", str(ports["auth"])),
        *("--enrolment-port", str(ports["enrolment"]), "--audit-port", str(ports["audit"])),
        *extra,
    ]
    command = (
        ["make", "--no-print-directory", "-C", str(ROOT), "run", f"ARGS={' '.join(flags)}"]
        if via_make
        else [sys.executable, "-m", "services.cli", "dev", *flags]
    )
    # A job of its own, as a terminal starts one: Ctrl-C goes to its process group.
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


class Output:
    """Everything a stack printed: up to "running" read in the test, the rest in a thread
    (a stack that logs more than a pipe holds would otherwise block on a write)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.before = read_until_running(proc)
        self._rest: list[str] = []
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._rest.extend, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def after(self) -> str:
        """What it printed after "running" (once it has exited)."""
        self._reader.join(10)
        return "".join(self._rest)


def read_until_running(proc: subprocess.Popen[str], within: float = 180) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "press Ctrl-C" in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError("twofa dev did not come up:\n" + "".join(seen))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> list[psutil.Process]:
    """Ctrl-C, as a terminal sends it: SIGINT to the job's process group (or another
    signal); returns what is still alive of what the stack had started."""
    children = psutil.Process(proc.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    # make itself dies of the SIGINT, as it does at a terminal; twofa dev exits 0.
    assert proc.wait(60) in (0, -signal.SIGINT)
    _, alive = psutil.wait_procs(children, timeout=20)
    return list(alive)


def errors_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"level":"error"' in line or "Traceback" in line]


def test_make_run_starts_the_stack_serves_a_login_and_stops_clean(tmp_path: Path) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    proc = start(tmp_path / ".twofa", ports, "--replicas", "auth=2", "--demo", via_make=True)
    try:
        printed = Output(proc)
    except BaseException:
        proc.kill()
        raise
    output = printed.before
    # "ready" comes once everything is in place, the demo accounts included.
    assert (tmp_path / ".twofa" / "demo-credentials.txt").exists()
    try:
        for name in ("auth API", "auth#2 API", "enrolment API", "audit API", "auth OpenAPI docs"):
            assert name in output
        password = re.search(r"^demo\s+password (\S+)", output, re.MULTILINE)
        assert password, output
        for port in (ports["auth"], ports["auth"] + 10):  # both copies of auth
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                tokens = http.post(
                    "/v1/login", json={"username": "demo", "password": password.group(1)}
                )
                assert tokens.status_code == 200, tokens.text
        support = re.search(r"^support\.one\s+password (\S+)", output, re.MULTILINE)
        assert support is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['auth']}", timeout=10) as http:
            step = http.post(
                "/v1/login", json={"username": "support.one", "password": support.group(1)}
            )
            assert step.json()["mfa_required"] is True  # support users have 2FA on
    finally:
        leftovers = stop(proc)
    assert leftovers == [], f"processes left behind: {leftovers}"
    stopping = printed.after()
    steps = ["stopping the services and the relay", "stopping the broker", "stopping PostgreSQL"]
    positions = [stopping.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), stopping
    assert errors_in(stopping) == [], stopping  # an ordinary stop is quiet

    # A second run on the same data: the accounts are still there.
    again = start(tmp_path / ".twofa", ports, "--demo")
    try:
        second = Output(again).before
        password = re.search(r"^demo\s+password (\S+)", second, re.MULTILINE)
        assert password
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['auth']}", timeout=10) as http:
            tokens = http.post(
                "/v1/login", json={"username": "demo", "password": password.group(1)}
            )
            assert tokens.status_code == 200
    finally:
        assert stop(again) == []


def test_twofa_dev_uses_the_servers_the_environment_names(
    tmp_path: Path, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    env |= {
        "TWOFA_DATABASE_URL": database_url,
        "TWOFA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TWOFA_KAFKA_TOPIC": topic,
    }
    flags = [f"--{name}-port={port}" for name, port in ports.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev", "--data-dir", str(tmp_path / "d"), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output = Output(proc).before
    finally:
        leftovers = stop(proc)
    assert "starting embedded" not in output  # neither server was started
    assert kafka_bootstrap in output and database_url in output
    assert not (tmp_path / "d" / "postgres").exists()
    assert leftovers == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_stack_like_ctrl_c(tmp_path: Path, sig: int) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    proc = start(tmp_path / ".twofa", ports)
    try:
        printed = Output(proc)
    except BaseException:
        proc.kill()
        raise
    assert stop(proc, sig) == []
    stopping = printed.after()
    assert "twofa dev: stopped" in stopping
    assert errors_in(stopping) == [], stopping


def test_after_kill_9_nothing_it_started_lives_on_and_the_next_run_serves(tmp_path: Path) -> None:
    """As an OOM kill or a closed terminal would end it: within 10 s the services, relay,
    broker and PostgreSQL are gone; the next run holds the ports itself and serves a
    login on the same data."""
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    postgres = tmp_path / ".twofa" / "postgres"
    proc = start(tmp_path / ".twofa", ports, "--demo")
    try:
        password = re.search(r"^demo\s+password (\S+)", Output(proc).before, re.MULTILINE)
        assert password
        started = psutil.Process(proc.pid).children(recursive=True)
        names = {" ".join(p.cmdline()) for p in started}
        assert any("tansu" in name for name in names), names
        assert sum("services.cli" in name for name in names) == 4, names  # relay + 3 services
        proc.kill()
        proc.wait(10)
        _, alive = psutil.wait_procs(started, timeout=10)
        assert list(alive) == []
        assert running_postmaster(postgres) is None
        for port in ports.values():
            with contextlib.suppress(httpx.TransportError), httpx.Client(timeout=1) as http:
                raise AssertionError(http.get(f"http://127.0.0.1:{port}/healthz").text)

        again = start(tmp_path / ".twofa", ports)
        Output(again)
        try:
            mine = psutil.Process(again.pid).children(recursive=True)
            with httpx.Client(base_url=f"http://127.0.0.1:{ports['auth']}", timeout=10) as http:
                answer = http.post(
                    "/v1/login", json={"username": "demo", "password": password.group(1)}
                )
                assert answer.status_code == 200, answer.text
            holder = holder_of(ports["auth"])
            assert holder is not None and any(f"pid {p.pid} " in holder for p in mine)
        finally:
            assert stop(again) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_postgres(postgres)


def test_the_next_run_stops_what_a_run_killed_with_its_guard_left(tmp_path: Path) -> None:
    """Even the PostgreSQL guard killed too (kill -9 of everything but PostgreSQL): the
    next run stops the PostgreSQL left running, says so in one line, and starts."""
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    postgres = tmp_path / ".twofa" / "postgres"
    proc = start(tmp_path / ".twofa", ports)
    try:
        Output(proc)
        for child in psutil.Process(proc.pid).children(recursive=True):
            if "shared.devtools.guard" in " ".join(child.cmdline()):
                child.kill()
        proc.kill()
        proc.wait(10)
        left = running_postmaster(postgres)
        assert left is not None
        again = start(tmp_path / ".twofa", ports)
        try:
            second = Output(again).before
            said = [line for line in second.splitlines() if "earlier run left behind" in line]
            assert len(said) == 1 and f"PostgreSQL (pid {left})" in said[0], second
        finally:
            assert stop(again) == []
        assert running_postmaster(postgres) is None
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_postgres(postgres)


def test_a_stale_list_of_postgres_holders_does_not_keep_postgres_running(tmp_path: Path) -> None:
    """The wheel counts handle holders in .handle_pids.json; a dead one must not count."""
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    postgres = tmp_path / ".twofa" / "postgres"
    proc = start(tmp_path / ".twofa", ports)
    try:
        Output(proc)
        holders = postgres / ".handle_pids.json"
        dead = subprocess.Popen(["true"])
        dead.wait()
        holders.write_text(json.dumps([*json.loads(holders.read_text()), dead.pid]))
        assert stop(proc) == []
        assert running_postmaster(postgres) is None
    finally:
        stop_postgres(postgres)


def test_a_port_held_by_another_process_stops_the_start_with_a_clear_word(tmp_path: Path) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", ports["auth"]))
        foreign.listen()
        proc = start(tmp_path / ".twofa", ports)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"port {ports['auth']} (auth) is taken by pid {os.getpid()} " in output
    assert "choose another port with --auth-port" in output
    assert "starting" not in output  # nothing was started
    assert not (tmp_path / ".twofa" / "postgres").exists()


def test_dev_stop_stops_a_stack_left_running(tmp_path: Path) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    proc = start(tmp_path / ".twofa", ports)
    try:
        Output(proc)
        started = psutil.Process(proc.pid).children(recursive=True)
        stopper = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "dev",
                "--stop",
                "--data-dir",
                str(tmp_path / ".twofa"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert stopper.returncode == 0, stopper.stdout + stopper.stderr
        assert proc.wait(30) == 0
        _, alive = psutil.wait_procs(started, timeout=10)
        assert list(alive) == []
        assert running_postmaster(tmp_path / ".twofa" / "postgres") is None
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_postgres(tmp_path / ".twofa" / "postgres")
