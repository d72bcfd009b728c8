"""The auth service over HTTP (in-process) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.auth.main import create_app
from services.auth.usecases.deps import AuthDeps
from shared.security.totp import time_step
from tests.support.apps import client_for, is_problem
from tests.support.clock import Clock
from tests.support.seeding import Enrolled, enable_through_domain
from tests.support.settings import settings_for
from tests.support.totp import otp

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@dataclass
class Auth:
    client: httpx.AsyncClient
    other: httpx.AsyncClient  # a second app instance on the same store
    core: AuthDeps
    clock: Clock


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[Auth]:
    settings = settings_for(database_url, without_broker=True)
    clock = Clock()
    first, second = create_app(settings, clock=clock), create_app(settings, clock=clock)
    async with client_for(first) as one, client_for(second) as two:
        yield Auth(one, two, first.state.deps, clock)


def name() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def register(auth: Auth, username: str | None = None) -> tuple[str, str]:
    username = username or name()
    response = await auth.client.post(
        "/v1/accounts",
        json={"username": username, "email": f"{username}@example.org", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    return username, response.json()["account_id"]


async def login(
    auth: Auth, username: str, client: httpx.AsyncClient | None = None
) -> dict[str, object]:
    response = await (client or auth.client).post(
        "/v1/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def enabled_user(auth: Auth) -> tuple[str, str, Enrolled]:
    username, account_id = await register(auth)
    return username, account_id, await enable_through_domain(auth.core, account_id, auth.clock())


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_password_only_login_gives_tokens_that_the_jwks_verifies(auth: Auth) -> None:
    username, account_id = await register(auth)
    tokens = await login(auth, username)
    assert tokens["acr"] == "aal1" and tokens["amr"] == ["pwd"]
    jwks = (await auth.client.get("/.well-known/jwks.json")).json()
    token = str(tokens["access_token"])
    # RFC 9864's entry, checked with nothing but the raw key: the signature over the input.
    (current,) = [k for k in jwks["keys"] if k["alg"] == "Ed25519"]
    signing_input, _, signature = token.rpartition(".")
    raw = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(current["x"] + "="))
    raw.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), signing_input.encode()
    )
    # The deprecated entry is what PyJWT (2.15) loads; its key checks the token once
    # "Ed25519" is registered as OKP (as README says, and shared.security.keys does).
    (legacy,) = [k for k in jwks["keys"] if k["alg"] == "EdDSA"]
    claims = jwt.decode(token, jwt.PyJWK(legacy).key, algorithms=["Ed25519"], audience="twofa")
    assert claims["sub"] == account_id and claims["iss"] == "twofa"
    assert {"sid", "iat", "exp", "auth_time", "amr", "acr", "roles"} <= set(claims)
    me = await auth.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == username and me.json()["twofa_enabled"] is False


async def test_enable_then_login_at_once_requires_the_otp(auth: Auth) -> None:
    """Principle 2: no consumer runs here at all; the stream itself answers."""
    username, _, _ = await enabled_user(auth)
    body = await login(auth, username)
    assert body["mfa_required"] is True
    assert body["methods"] == ["totp", "recovery_code"]
    assert "access_token" not in body


async def test_otp_step_gives_aal2_tokens_and_the_same_code_never_twice(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    code = otp(enrolled.secret, auth.clock())
    first = await login(auth, username)
    ok = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": first["mfa_token"], "otp": code}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["acr"] == "aal2" and ok.json()["amr"] == ["pwd", "otp", "mfa"]
    again = await login(auth, username)
    replay = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": again["mfa_token"], "otp": code}
    )
    assert replay.status_code == 401 and replay.json()["code"] == "invalid_code"
    reuse = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": first["mfa_token"], "otp": code}
    )
    assert reuse.status_code == 401 and reuse.json()["code"] == "invalid_mfa_token"


async def test_fifty_concurrent_uses_of_one_code_across_two_instances_one_wins(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    tokens = [(await login(auth, username))["mfa_token"] for _ in range(50)]
    code = otp(enrolled.secret, auth.clock())
    clients = [auth.client, auth.other]
    responses = await asyncio.gather(
        *(
            clients[i % 2].post("/v1/login/mfa", json={"mfa_token": t, "otp": code})
            for i, t in enumerate(tokens)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 1, statuses
    assert all(s in (401, 423) for s in statuses if s != 200)
    verified = await auth.core.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'twofa.otp_verified'"
    )
    assert verified == 1


async def test_fifty_concurrent_uses_of_one_recovery_code_one_wins(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    tokens = [(await login(auth, username))["mfa_token"] for _ in range(50)]
    code = enrolled.codes[3].upper().replace("-", "")  # case- and dash-insensitive
    clients = [auth.client, auth.other]
    responses = await asyncio.gather(
        *(
            clients[i % 2].post("/v1/login/mfa", json={"mfa_token": t, "recovery_code": code})
            for i, t in enumerate(tokens)
        )
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    assert winners[0].json()["amr"] == ["pwd", "recovery_code", "mfa"]
    used = await auth.core.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'twofa.recovery_code_used'"
    )
    assert used == 1


async def test_spent_recovery_code_is_refused(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    first = await login(auth, username)
    used = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": first["mfa_token"], "recovery_code": enrolled.codes[0]}
    )
    assert used.status_code == 200
    second = await login(auth, username)
    again = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": second["mfa_token"], "recovery_code": enrolled.codes[0]}
    )
    assert again.status_code == 401 and again.json()["attempts_left"] == 4
    me = await auth.client.get("/v1/me", headers=bearer(used.json()["access_token"]))
    assert me.json()["recovery_codes_left"] == 5


async def test_lockout_after_five_failures_across_instances_kills_the_mfa_token(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    challenge = await login(auth, username)
    left = []
    for i in range(5):
        client = auth.client if i % 2 else auth.other
        wrong = await client.post(
            "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "otp": "000000"}
        )
        left.append(wrong.json().get("attempts_left"))
        last = wrong
    assert left[:4] == [4, 3, 2, 1]
    assert last.status_code == 423 and last.headers["Retry-After"] == str(15 * 60)
    assert is_problem(last)
    good = otp(enrolled.secret, auth.clock())
    locked = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "otp": good}
    )
    assert locked.status_code == 423
    # A new login during the lock cannot get through either.
    fresh = await login(auth, username)
    blocked = await auth.other.post(
        "/v1/login/mfa", json={"mfa_token": fresh["mfa_token"], "otp": good}
    )
    assert blocked.status_code == 423
    auth.clock.advance(minutes=16)
    dead = await auth.client.post(
        "/v1/login/mfa",
        json={"mfa_token": challenge["mfa_token"], "otp": otp(enrolled.secret, auth.clock())},
    )
    assert dead.status_code == 401 and dead.json()["code"] == "invalid_mfa_token"
    newer = await login(auth, username)
    works = await auth.client.post(
        "/v1/login/mfa",
        json={"mfa_token": newer["mfa_token"], "otp": otp(enrolled.secret, auth.clock())},
    )
    assert works.status_code == 200


async def test_a_correct_password_does_not_clear_otp_failures(auth: Auth) -> None:
    username, _, _ = await enabled_user(auth)
    for _ in range(4):
        challenge = await login(auth, username)  # starting a new login resets nothing
        await auth.client.post(
            "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "otp": "111111"}
        )
    challenge = await login(auth, username)
    fifth = await auth.client.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "otp": "111111"}
    )
    assert fifth.status_code == 423


async def test_unknown_user_and_wrong_password_answer_alike(auth: Auth) -> None:
    username, _ = await register(auth)
    wrong = await auth.client.post(
        "/v1/login", json={"username": username, "password": "not the password"}
    )
    unknown = await auth.client.post(
        "/v1/login", json={"username": name(), "password": "not the password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_password_failures_throttle_strangers_but_not_a_trusted_device(auth: Auth) -> None:
    username, _ = await register(auth)
    device = (await login(auth, username))["device_token"]
    for _ in range(10):
        await auth.client.post(
            "/v1/login", json={"username": username, "password": "guess-guess-guess"}
        )
    throttled = await auth.client.post(
        "/v1/login", json={"username": username, "password": PASSWORD}
    )
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    forged = await auth.client.post(
        "/v1/login",
        json={"username": username, "password": PASSWORD, "device_token": str(device)[:-2] + "xx"},
    )
    assert forged.status_code == 429
    owner = await auth.client.post(
        "/v1/login", json={"username": username, "password": PASSWORD, "device_token": device}
    )
    assert owner.status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_session(auth: Auth) -> None:
    username, _ = await register(auth)
    tokens = await login(auth, username)
    rotated = await auth.client.post(
        "/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != tokens["refresh_token"]
    reused = await auth.client.post(
        "/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert reused.status_code == 401 and reused.json()["code"] == "refresh_token_reused"
    after = await auth.client.post(
        "/v1/token/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert after.status_code == 401
    me = await auth.client.get("/v1/me", headers=bearer(rotated.json()["access_token"]))
    assert me.status_code == 401


async def test_logout_ends_the_session(auth: Auth) -> None:
    username, _ = await register(auth)
    tokens = await login(auth, username)
    assert (
        await auth.client.post("/v1/logout", headers=bearer(tokens["access_token"]))
    ).status_code == 204
    assert (
        await auth.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401


async def test_password_and_email_changes_need_the_otp_when_2fa_is_on(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    challenge = await login(auth, username)
    session = await auth.client.post(
        "/v1/login/mfa",
        json={"mfa_token": challenge["mfa_token"], "recovery_code": enrolled.codes[1]},
    )
    other = await auth.client.post(
        "/v1/login/mfa",
        json={
            "mfa_token": (await login(auth, username))["mfa_token"],
            "recovery_code": enrolled.codes[2],
        },
    )
    token = session.json()["access_token"]
    new_password = "a brand new passphrase 2026"
    missing = await auth.client.post(
        "/v1/account/password",
        headers=bearer(token),
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert missing.status_code == 401 and missing.json()["code"] == "second_factor_required"
    changed = await auth.client.post(
        "/v1/account/password",
        headers=bearer(token),
        json={
            "current_password": PASSWORD,
            "new_password": new_password,
            "otp": otp(enrolled.secret, auth.clock()),
        },
    )
    assert changed.status_code == 204, changed.text
    # Every other session ended; this one continues.
    assert (
        await auth.client.get("/v1/me", headers=bearer(other.json()["access_token"]))
    ).status_code == 401
    assert (await auth.client.get("/v1/me", headers=bearer(token))).status_code == 200
    auth.clock.advance(seconds=30)
    email = await auth.client.post(
        "/v1/account/email",
        headers=bearer(token),
        json={
            "current_password": new_password,
            "email": "new@example.org",
            "otp": otp(enrolled.secret, auth.clock()),
        },
    )
    assert email.status_code == 204
    assert (await auth.client.get("/v1/me", headers=bearer(token))).json()[
        "email"
    ] == "new@example.org"


async def test_reauthenticate_gives_a_fresh_auth_time(auth: Auth) -> None:
    username, _ = await register(auth)
    tokens = await login(auth, username)
    auth.clock.advance(minutes=10)
    fresh = await auth.client.post(
        "/v1/reauthenticate", headers=bearer(tokens["access_token"]), json={"password": PASSWORD}
    )
    assert fresh.status_code == 200
    old = jwt.decode(str(tokens["access_token"]), options={"verify_signature": False})
    new = jwt.decode(fresh.json()["access_token"], options={"verify_signature": False})
    assert new["auth_time"] - old["auth_time"] == 600 and new["sid"] == old["sid"]
    wrong = await auth.client.post(
        "/v1/reauthenticate",
        headers=bearer(tokens["access_token"]),
        json={"password": "nope nope nope"},
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_password"


async def test_closed_registration_needs_a_support_token(database_url: str) -> None:
    settings = settings_for(database_url, open_registration=False, without_broker=True)
    async with client_for(create_app(settings)) as client:
        body = {"username": name(), "email": "x@example.org", "password": PASSWORD}
        refused = await client.post("/v1/accounts", json=body)
        assert refused.status_code == 401 and is_problem(refused)


async def test_otp_window_accepts_one_step_either_side_only(auth: Auth) -> None:
    username, _, enrolled = await enabled_user(auth)
    now = auth.clock()
    results = {}
    for offset in (-2, -1, 1, 2):
        challenge = await login(auth, username)
        code = otp(enrolled.secret, now + timedelta(seconds=30 * offset))
        response = await auth.client.post(
            "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "otp": code}
        )
        results[offset] = response.status_code
    assert results == {-2: 401, -1: 200, 1: 200, 2: 401}
    assert time_step(now) > 0
