"""A forged ``twofactor`` snapshot, written as the database superuser, turns no 2FA off.

Through the real auth API on a test database: an account with 2FA on, then its
snapshot overwritten with ``enabled: false`` four ways. Each time the next login still
asks for the OTP, and ``twofa_snapshot_rejected_total`` rises by one for that reason.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from services.auth.main import create_app
from services.auth.usecases.deps import AuthDeps
from shared.domain.twofactor.state import TwoFactorState
from shared.eventstore.snapshots import TwoFactorFold
from shared.eventstore.streams import twofactor_stream
from shared.security.snapshot_mac import SnapshotKeys, snapshot_message
from tests.support.apps import client_for
from tests.support.clock import Clock
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for
from tests.support.totp import otp

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
DISABLED = orjson.dumps(TwoFactorFold().to_snapshot(TwoFactorState()))  # enabled: false


@dataclass
class Auth:
    client: httpx.AsyncClient
    core: AuthDeps
    clock: Clock
    owner: asyncpg.Connection  # the database's owner and superuser, as an attacker


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[Auth]:
    # A snapshot after every append, so enabling 2FA leaves a genuine one to tamper with.
    settings = settings_for(database_url, without_broker=True, snapshot_every=1)
    clock = Clock()
    app = create_app(settings, clock=clock)
    owner = await asyncpg.connect(database_url)
    try:
        async with client_for(app) as client:
            yield Auth(client, app.state.deps, clock, owner)
    finally:
        await owner.close()


def rejected(reason: str) -> float:
    labels = {"type": "twofactor", "reason": reason}
    return REGISTRY.get_sample_value("twofa_snapshot_rejected_total", labels) or 0.0


async def login(auth: Auth, username: str) -> dict[str, object]:
    answer = await auth.client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def forged(stream: str, version: int, state: bytes) -> dict[str, tuple[str, bytes, bytes]]:
    """Each forgery tried: (key id, MAC, state bytes) written over the genuine row."""
    outsider = SnapshotKeys({"s9": secrets.token_bytes(32)}, "s9")  # a key not in the ring
    message = snapshot_message(stream, version, "twofactor", 2, DISABLED)
    edited = state.replace(b'"enabled":true', b'"enabled":false')
    assert edited != state
    return {
        "missing": ("", b"", DISABLED),  # no MAC at all
        "mismatch": ("s1", secrets.token_bytes(32), DISABLED),  # garbage under the real id
        "unknown_key": (*outsider.sign(message), DISABLED),
        "edited": ("", b"", edited),  # the genuine row's MAC, its state edited: filled below
    }


async def test_a_forged_twofactor_snapshot_still_asks_for_the_otp_and_raises_the_alarm(
    auth: Auth, caplog: pytest.LogCaptureFixture
) -> None:
    username = f"user-{uuid.uuid4().hex[:10]}"
    created = await auth.client.post(
        "/v1/accounts",
        json={"username": username, "email": f"{username}@example.org", "password": PASSWORD},
    )
    account_id = created.json()["account_id"]
    enrolled = await enable_through_domain(auth.core, account_id, auth.clock())
    stream = twofactor_stream(account_id)
    genuine = await auth.owner.fetchrow(
        "SELECT stream_version, state, key_id, mac FROM snapshots WHERE stream_id = $1", stream
    )
    assert genuine is not None and genuine["key_id"] == "s1"
    assert orjson.loads(genuine["state"])["enabled"] is True
    assert (await login(auth, username))["mfa_required"] is True  # the genuine one is believed

    tries = forged(stream, genuine["stream_version"], genuine["state"])
    tries["edited"] = (genuine["key_id"], genuine["mac"], tries["edited"][2])
    for name, (key_id, mac, state) in tries.items():
        reason = "mismatch" if name == "edited" else name
        await auth.owner.execute(
            "UPDATE snapshots SET state = $2, key_id = $3, mac = $4 WHERE stream_id = $1",
            *(stream, state, key_id, mac),
        )
        before = rejected(reason)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shared.eventstore.repository"):
            body = await login(auth, username)
        assert body["mfa_required"] is True and "access_token" not in body, name
        assert rejected(reason) == before + 1, name
        assert f"snapshot of {stream} ignored ({reason})" in caplog.text, name
        assert state.decode() not in caplog.text and (not mac or mac.hex() not in caplog.text)

    # The OTP step appends to the stream, and its snapshot replaces the forged row.
    code = otp(enrolled.secret, auth.clock())
    done = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": body["mfa_token"], "otp": code}
    )
    assert done.status_code == 200, done.text
    fresh = await auth.owner.fetchrow(
        "SELECT stream_version, state, key_id, mac FROM snapshots WHERE stream_id = $1", stream
    )
    assert fresh is not None and fresh["stream_version"] == genuine["stream_version"] + 1
    assert orjson.loads(fresh["state"])["enabled"] is True
    message = snapshot_message(stream, fresh["stream_version"], "twofactor", 2, fresh["state"])
    auth.core.twofactors.keys.check(fresh["key_id"], fresh["mac"], message)
