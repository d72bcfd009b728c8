"""``twofa dev`` (what ``make run`` runs): starts everything, serves a login, stops clean."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from shared.devtools.servers import free_port

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
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


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
            # Keep reading: a stack that logs more than a pipe holds (the broker stops first
            # on Ctrl-C, and the services log its loss) would block on a write otherwise.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return "".join(seen)
    proc.kill()
    raise AssertionError("twofa dev did not come up:\n" + "".join(seen))


def stop(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """Ctrl-C, as a terminal sends it: SIGINT to every process of the stack."""
    children = psutil.Process(proc.pid).children(recursive=True)
    for process in [psutil.Process(proc.pid), *children]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGINT)
    # make itself dies of the SIGINT, as it does at a terminal; twofa dev exits 0.
    assert proc.wait(60) in (0, -signal.SIGINT)
    _, alive = psutil.wait_procs(children, timeout=20)
    return list(alive)


def test_make_run_starts_the_stack_serves_a_login_and_stops_clean(tmp_path: Path) -> None:
    ports = {"auth": free_port(), "enrolment": free_port(), "audit": free_port()}
    proc = start(tmp_path / ".twofa", ports, "--replicas", "auth=2", "--demo", via_make=True)
    try:
        output = read_until_running(proc)
    except BaseException:
        proc.kill()
        raise
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

    # A second run on the same data: the accounts are still there.
    again = start(tmp_path / ".twofa", ports, "--demo")
    try:
        second = read_until_running(again)
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
    )
    try:
        output = read_until_running(proc)
    finally:
        leftovers = stop(proc)
    assert "starting embedded" not in output  # neither server was started
    assert kafka_bootstrap in output and database_url in output
    assert not (tmp_path / "d" / "postgres").exists()
    assert leftovers == []
