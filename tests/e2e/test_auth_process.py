"""``twofa serve auth`` and ``twofa accounts`` as real processes, over real HTTP."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from shared.devtools.servers import free_port
from shared.security.keys import SigningKeys
from tests.support.logins import process_env
from tests.support.polling import wait_until_ready

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def env(database_url: str, kafka_bootstrap: str, event_keys: SigningKeys) -> dict[str, str]:
    return {
        **os.environ,
        "TWOFA_DATABASE_URL": database_url,
        "TWOFA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TWOFA_ENCRYPTION_KEYS": f"k1:{key()}",
        "TWOFA_JWT_SIGNING_KEYS": SigningKeys.generate("e2e").to_config(),
        "TWOFA_RECOVERY_CODE_KEY": key(),
        "TWOFA_DEVICE_TOKEN_KEY": key(),
        "TWOFA_SNAPSHOT_KEYS": f"s1:{key()}",
        "TWOFA_EVENT_VERIFY_KEYS": event_keys.public_config(),
        "TWOFA_ARGON2_TIME_COST": "1",
        "TWOFA_ARGON2_MEMORY_KIB": "1024",
        "TWOFA_ARGON2_PARALLELISM": "1",
        "TWOFA_METRICS_PORT": str(free_port()),
    }


@contextlib.contextmanager
def serving(service: str, env: dict[str, str], metrics_port: int = 0) -> Iterator[str]:
    """``twofa serve <service>`` as a process on a free port, its metrics on
    ``metrics_port`` (or a free one), once ``/readyz`` answers 200; stopped with SIGTERM."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", service, "--port", str(port)],
        env={**process_env(env, service), "TWOFA_METRICS_PORT": str(metrics_port or free_port())},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, 30)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode in (0, -signal.SIGTERM), output.decode()  # uvicorn re-raises it
        assert PASSWORD.encode() not in output


@pytest.fixture
def auth_url(env: dict[str, str]) -> Iterator[str]:
    with serving("auth", env, int(env["TWOFA_METRICS_PORT"])) as url:
        yield url


def test_enrolment_and_audit_serve_with_keys_they_only_verify_with(
    env: dict[str, str], auth_url: str
) -> None:
    """The other services run with the public keys only (TWOFA_JWT_VERIFY_KEYS)."""
    keys = SigningKeys.from_config(env["TWOFA_JWT_SIGNING_KEYS"], None)
    public = {
        kid: base64.b64encode(key.public_bytes_raw()).decode()
        for kid, key in keys.public_keys().items()
    }
    verify_only = {k: v for k, v in env.items() if k != "TWOFA_JWT_SIGNING_KEYS"}
    verify_only["TWOFA_JWT_VERIFY_KEYS"] = ",".join(f"{k}:{v}" for k, v in public.items())
    with httpx.Client(base_url=auth_url, timeout=10) as http:
        http.post(
            "/v1/accounts",
            json={"username": "ann.e2e", "email": "ann@example.org", "password": PASSWORD},
        )
        token = http.post("/v1/login", json={"username": "ann.e2e", "password": PASSWORD}).json()[
            "access_token"
        ]
    bearer = {"Authorization": f"Bearer {token}"}
    with (
        serving("enrolment", verify_only) as enrolment,
        httpx.Client(base_url=enrolment, timeout=10) as http,
    ):
        assert http.get("/readyz").status_code == 200
        started = http.post("/v1/2fa/enrolment", headers=bearer)
        assert started.status_code == 201 and started.json()["otpauth_uri"].startswith("otpauth://")
    with serving("audit", verify_only) as audit, httpx.Client(base_url=audit, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        # The signature checks out with the public key alone; the audit API then wants a
        # login made with the second factor (its security role needs acr aal2).
        answer = http.get("/v1/audit/verify", headers=bearer)
        assert answer.status_code == 401
        assert answer.json()["code"] == "insufficient_user_authentication"


def test_operator_creates_a_support_account_that_logs_in_over_http(
    env: dict[str, str], auth_url: str
) -> None:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "accounts",
            "create",
            "--username",
            "sam.support",
            "--email",
            "sam@example.org",
            "--password-stdin",
            "--role",
            "support",
        ],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    account_id = created.stdout.strip()
    weak = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "accounts",
            "create",
            "--username",
            "weak.one",
            "--email",
            "w@example.org",
            "--password-stdin",
        ],
        input="short\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert weak.returncode == 1 and "password must be at least 8 characters" in weak.stderr

    with httpx.Client(base_url=auth_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "database": True,
            "broker": True,
            "sessions": True,
        }
        tokens = http.post("/v1/login", json={"username": "sam.support", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        assert tokens.headers["cache-control"] == "no-store"
        me = http.get(
            "/v1/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"}
        )
        assert me.json()["account_id"] == account_id and me.json()["roles"] == ["support"]
        assert (
            http.post(
                "/v1/login", json={"username": "sam.support", "password": "x" * 9}
            ).status_code
            == 401
        )
        # The counters tell a real name's failure from an unknown one's: Prometheus only.
        assert http.get("/metrics").status_code == 404
        metrics = httpx.get(f"http://127.0.0.1:{env['TWOFA_METRICS_PORT']}/metrics").text
        assert 'twofa_login_outcomes_total{outcome="ok",step="password"} 1.0' in metrics
        assert 'outcome="invalid_credentials",step="password"' in metrics
        assert http.get("/openapi.json").json()["info"]["title"] == "twofa auth"


@pytest.mark.parametrize("service", ["auth", "enrolment", "audit"])
def test_a_production_service_without_a_broker_refuses_to_start_and_says_why(
    env: dict[str, str], service: str
) -> None:
    production = {**env, "TWOFA_ENV": "production"}
    del production["TWOFA_KAFKA_BOOTSTRAP_SERVERS"]
    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", service, "--port", str(free_port())],
        env=process_env(production, service),  # only its keys: the broker is what it lacks
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "twofa: configuration error: TWOFA_KAFKA_BOOTSTRAP_SERVERS is required in production:"
        " without a broker no service learns revoked sessions and audit ingests nothing"
    )
