"""Enrolment and auth together, in-process, over real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import io
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import resvg_py
import zxingcpp
from PIL import Image

from services.auth.main import create_app as auth_app
from services.auth.usecases.account import set_role
from services.auth.usecases.deps import AuthDeps
from services.enrolment.adapters.qr import qr_image
from services.enrolment.main import create_app as enrolment_app
from shared.app.context import Context
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.security import totp
from tests.support.apps import client_for, is_problem
from tests.support.clock import Clock
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.settings import settings_for, with_kafka, without_broker
from tests.support.totp import otp

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@dataclass
class Stack:
    auth: httpx.AsyncClient
    enrol: httpx.AsyncClient
    enrol_two: httpx.AsyncClient  # a second enrolment instance on the same store
    core: AuthDeps
    clock: Clock
    enrolment_state: Any


@pytest.fixture
async def stack(database_url: str, kafka_bootstrap: str, topic: str) -> AsyncIterator[Stack]:
    settings = settings_for(
        database_url,
        **with_kafka(kafka_bootstrap, topic),
        reset_cooling_off_seconds=3600,
    )
    clock = Clock()
    auth, enrol, enrol_two = (
        auth_app(settings, clock=clock),
        enrolment_app(settings, clock=clock),
        enrolment_app(settings, clock=clock),
    )
    async with client_for(auth) as a, client_for(enrol) as e, client_for(enrol_two) as e2:
        core: AuthDeps = auth.state.deps
        async with relaying(database_url, EventStore(core.pool, REGISTRY), kafka_bootstrap, topic):
            yield Stack(a, e, e2, core, clock, enrol.state)


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(stack: Stack, email: str | None = None) -> tuple[str, str]:
    username = f"user-{uuid.uuid4().hex[:10]}"
    response = await stack.auth.post(
        "/v1/accounts",
        json={
            "username": username,
            "email": email or f"{username}@example.org",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 201, response.text
    return username, response.json()["account_id"]


async def login(stack: Stack, username: str) -> dict[str, Any]:
    response = await stack.auth.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def login_with_otp(stack: Stack, username: str, secret: str) -> dict[str, Any]:
    challenge = await login(stack, username)
    assert challenge.get("mfa_required") is True
    response = await stack.auth.post(
        "/v1/login/mfa",
        json={"mfa_token": challenge["mfa_token"], "otp": otp(secret, stack.clock())},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def decode_png(data: bytes) -> str:
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    white = Image.new("RGBA", image.size, "white")
    white.alpha_composite(image)
    found = zxingcpp.read_barcodes(white.convert("L"))
    assert len(found) == 1
    return str(found[0].text)


def secret_of(uri: str) -> str:
    return parse_qs(urlsplit(uri).query)["secret"][0]


async def enable(stack: Stack, token: str) -> tuple[str, list[str]]:
    started = await stack.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    confirmed = await stack.enrol.post(
        "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": otp(secret, stack.clock())}
    )
    assert confirmed.status_code == 200, confirmed.text
    codes: list[str] = confirmed.json()["recovery_codes"]
    return secret, codes


@pytest.mark.parametrize(
    "label",
    ["ann@example.org", "Ann Example", "weird:label@x.org", "Zoë Müller", "名前@例え.jp", "a%20b"],
)
def test_qr_codes_decode_to_the_exact_uri_for_any_label(label: str) -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, issuer="Partner Portal: EU", account=label)
    assert decode_png(qr_image(uri, "png")) == uri
    svg = qr_image(uri, "svg").decode()
    assert decode_png(bytes(resvg_py.svg_to_bytes(svg_string=svg))) == uri
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    raw_issuer, _, raw_account = parts.path.lstrip("/").partition(":")  # ':' inside is %3A
    assert unquote(raw_issuer) == "Partner Portal: EU" and unquote(raw_account) == label
    query = parse_qs(parts.query)
    assert query["issuer"] == ["Partner Portal: EU"] and query["secret"] == [secret]
    assert query["algorithm"] == ["SHA1"] and query["digits"] == ["6"] and query["period"] == ["30"]
    assert len(secret) == 32 and "=" not in secret


async def test_the_whole_flow_from_the_help_page(stack: Stack) -> None:
    username, account_id = await register(stack)
    tokens = await login(stack, username)
    token = tokens["access_token"]

    # Enable without a fresh password: 401 reauthentication_required.
    stack.clock.advance(minutes=6)
    stale = await stack.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    assert stale.status_code == 401 and stale.json()["code"] == "reauthentication_required"
    fresh = await stack.auth.post(
        "/v1/reauthenticate", headers=bearer(token), json={"password": PASSWORD}
    )
    token = fresh.json()["access_token"]

    started = await stack.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    assert started.status_code == 201 and started.headers["cache-control"].startswith("no-store")
    # The label comes from the projection once account.registered was consumed.
    body = started.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/Partner%20Portal:")
    png = await stack.enrol.get(body["qr_png"], headers=bearer(token))
    assert png.headers["content-type"] == "image/png" and png.headers["cache-control"].startswith(
        "no-store"
    )
    uri = decode_png(png.content)
    assert uri == body["otpauth_uri"]
    secret = secret_of(uri)

    wrong = await stack.enrol.post(
        "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": "000000"}
    )
    assert wrong.status_code == 401 and wrong.json()["attempts_left"] == 4
    assert (await stack.enrol.get("/v1/2fa", headers=bearer(token))).json()["enabled"] is False

    confirmed = await stack.enrol.post(
        "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": otp(secret, stack.clock())}
    )
    assert confirmed.status_code == 200
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 6 and len(set(codes)) == 6
    status = (await stack.enrol.get("/v1/2fa", headers=bearer(token))).json()
    assert status["enabled"] is True and status["recovery_codes_left"] == 6
    assert not any(c in str(status) for c in codes)
    again = await stack.enrol.post(
        "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": otp(secret, stack.clock())}
    )
    assert again.status_code == 409  # never shown twice

    # Login now needs the OTP.
    assert (await login(stack, username))["mfa_required"] is True
    stack.clock.advance(seconds=30)
    session = await login_with_otp(stack, username, secret)

    # A recovery code logs in once and not twice.
    challenge = await login(stack, username)
    used = await stack.auth.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "recovery_code": codes[0]}
    )
    assert used.status_code == 200
    challenge = await login(stack, username)
    twice = await stack.auth.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "recovery_code": codes[0]}
    )
    assert twice.status_code == 401

    # Regenerate: the old set stops at once.
    stack.clock.advance(seconds=30)
    fresh_codes = await stack.enrol.post(
        "/v1/2fa/recovery-codes",
        headers=bearer(session["access_token"]),
        json={"otp": otp(secret, stack.clock())},
    )
    assert fresh_codes.status_code == 200
    new_codes = fresh_codes.json()["recovery_codes"]
    assert not set(new_codes) & set(codes)
    challenge = await login(stack, username)
    old = await stack.auth.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "recovery_code": codes[1]}
    )
    assert old.status_code == 401
    new = await stack.auth.post(
        "/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], "recovery_code": new_codes[1]}
    )
    assert new.status_code == 200

    # Disable with an OTP, one last time; then the password alone logs in.
    stack.clock.advance(seconds=30)
    off = await stack.enrol.post(
        "/v1/2fa/disable",
        headers=bearer(new.json()["access_token"]),
        json={"otp": otp(secret, stack.clock())},
    )
    assert off.status_code == 204
    plain = await login(stack, username)
    assert "access_token" in plain and plain["acr"] == "aal1"
    kinds = await stack.core.pool.fetch(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version",
        f"twofactor-{account_id}",
    )
    assert [k["event_type"] for k in kinds].count("twofa.enabled") == 1


async def test_enabling_ends_other_sessions_and_the_verifier_learns_it(stack: Stack) -> None:
    username, _ = await register(stack)
    this = await login(stack, username)
    other = await login(stack, username)
    await enable(stack, this["access_token"])

    # The auth service consumed twofa.enabled and revoked the other session only.
    async def other_revoked() -> bool:
        me = await stack.auth.get("/v1/me", headers=bearer(other["access_token"]))
        return me.status_code == 401

    await eventually(other_revoked, within=30)
    assert (await stack.auth.get("/v1/me", headers=bearer(this["access_token"]))).status_code == 200

    # The enrolment service verifies offline; it learns the revocation from Kafka.
    async def enrolment_refuses() -> bool:
        response = await stack.enrol.get("/v1/2fa", headers=bearer(other["access_token"]))
        return response.status_code == 401

    await eventually(enrolment_refuses, within=30)
    assert (
        await stack.enrol.get("/v1/2fa", headers=bearer(this["access_token"]))
    ).status_code == 200


async def test_label_is_the_email_from_the_first_second(database_url: str) -> None:
    """No consumer has run (no broker at all), then the projection holds an older email:
    the label is the account stream's email each time, never the account id."""
    settings = without_broker(settings_for(database_url))
    enrolment = enrolment_app(settings)
    async with client_for(auth_app(settings)) as auth, client_for(enrolment) as enrol:
        first = "zoë.o'neil+2fa@example.org"
        username = f"user-{uuid.uuid4().hex[:10]}"
        registered = await auth.post(
            "/v1/accounts", json={"username": username, "email": first, "password": PASSWORD}
        )
        account_id = registered.json()["account_id"]
        token = (
            await auth.post("/v1/login", json={"username": username, "password": PASSWORD})
        ).json()["access_token"]
        pool = enrolment.state.pool
        ready = await enrol.get("/readyz")  # no broker: no consumer to wait for
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": True}
        assert await pool.fetchval("SELECT count(*) FROM enrolment_labels") == 0
        started = await enrol.post("/v1/2fa/enrolment", headers=bearer(token))
        assert "Portal:zo%C3%AB.o%27neil%2B2fa%40example.org?" in started.json()["otpauth_uri"]

        changed = await auth.post(
            "/v1/account/email",
            headers=bearer(token),
            json={"current_password": PASSWORD, "email": "ann.new@example.org"},
        )
        assert changed.status_code == 204, changed.text
        # The projection as a consumer that saw only the registration would have left it.
        await pool.execute(
            """INSERT INTO enrolment_labels (account_id, email, position)
               SELECT $1, $2, position FROM events
               WHERE stream_id = $3 AND event_type = 'account.registered'""",
            account_id,
            first,
            f"account-{account_id}",
        )
        restarted = await enrol.post("/v1/2fa/enrolment", headers=bearer(token))
        assert "Portal:ann.new%40example.org?" in restarted.json()["otpauth_uri"]
        assert account_id not in restarted.json()["otpauth_uri"]


async def test_two_confirms_with_one_code_one_wins_and_confirm_races_disable(stack: Stack) -> None:
    username, account_id = await register(stack)
    token = (await login(stack, username))["access_token"]
    started = await stack.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    code = otp(started.json()["secret"], stack.clock())
    results = await asyncio.gather(
        *(
            (stack.enrol if i % 2 else stack.enrol_two).post(
                "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": code}
            )
            for i in range(10)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 409}, statuses
    # Disable racing a second confirm: the store stays consistent either way.
    secret = started.json()["secret"]
    stack.clock.advance(seconds=30)
    code = otp(secret, stack.clock())
    disable, confirm = await asyncio.gather(
        stack.enrol.post("/v1/2fa/disable", headers=bearer(token), json={"otp": code}),
        stack.enrol_two.post(
            "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": code}
        ),
    )
    assert disable.status_code == 204 and confirm.status_code in (401, 409)
    types = [
        r["event_type"]
        for r in await stack.core.pool.fetch(
            "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version",
            f"twofactor-{account_id}",
        )
    ]
    pairs = list(itertools.pairwise(types))
    assert ("twofa.enabled", "twofa.enabled") not in pairs
    assert types.count("twofa.enabled") == 1


async def support_user(stack: Stack) -> tuple[str, str, str]:
    """A support account with 2FA on, logged in with the second factor (acr aal2)."""
    username, account_id = await register(stack)
    await stack.core.pool.execute("SELECT 1")
    await set_role(stack.core, Context(), username=username, role="support", granted=True)
    token = (await login(stack, username))["access_token"]
    secret, _ = await enable(stack, token)
    stack.clock.advance(seconds=30)
    session = await login_with_otp(stack, username, secret)
    return account_id, session["access_token"], secret


async def test_support_reset_four_eyes_cooling_off_and_cancellation(stack: Stack) -> None:
    username, user_id = await register(stack)
    user_token = (await login(stack, username))["access_token"]
    user_secret, _ = await enable(stack, user_token)
    alice_id, alice, _ = await support_user(stack)
    _, bob, _ = await support_user(stack)
    path = f"/v1/admin/accounts/{user_id}/2fa/reset-requests"
    body = {"ticket": "SUP-4711", "reason": "lost phone and codes, identity checked"}

    # Without the role, or with it but without aal2: refused.
    assert (await stack.enrol.post(path, headers=bearer(user_token), json=body)).status_code == 403
    # Nobody may reset their own account.
    own = await stack.enrol.post(
        f"/v1/admin/accounts/{alice_id}/2fa/reset-requests", headers=bearer(alice), json=body
    )
    assert own.status_code == 409

    opened = await stack.enrol.post(path, headers=bearer(alice), json=body)
    assert opened.status_code == 201, opened.text
    request_id = opened.json()["request_id"]
    self_approval = await stack.enrol.post(f"{path}/{request_id}/approve", headers=bearer(alice))
    assert self_approval.status_code == 409
    approved = await stack.enrol.post(f"{path}/{request_id}/approve", headers=bearer(bob))
    assert approved.status_code == 200

    # During the delay the user's 2FA login cancels it.
    stack.clock.advance(seconds=30)
    await login_with_otp(stack, username, user_secret)
    view = (
        await stack.enrol.get(f"/v1/admin/accounts/{user_id}/2fa", headers=bearer(alice))
    ).json()
    assert view["enabled"] is True and view["reset"] is None

    # A second request, approved, completes after the delay: password alone works.
    second = await stack.enrol.post(path, headers=bearer(alice), json=body)
    request_id = second.json()["request_id"]
    await stack.enrol.post(f"{path}/{request_id}/approve", headers=bearer(bob))
    assert (await login(stack, username)).get("mfa_required") is True
    stack.clock.advance(hours=1, seconds=1)
    after = await login(stack, username)
    assert "access_token" in after
    types = await stack.core.pool.fetch(
        "SELECT event_type, metadata->>'actor' AS actor FROM events"
        " WHERE stream_id = $1 ORDER BY stream_version",
        f"twofactor-{user_id}",
    )
    steps = [
        (t["event_type"], t["actor"]) for t in types if t["event_type"].startswith("twofa.reset")
    ]
    assert steps == [
        ("twofa.reset_requested", f"account:{alice_id}"),
        ("twofa.reset_approved", steps[1][1]),
        ("twofa.reset_cancelled", f"account:{user_id}"),
        ("twofa.reset_requested", f"account:{alice_id}"),
        ("twofa.reset_approved", steps[1][1]),
        ("twofa.reset_completed", f"account:{user_id}"),
    ]
    assert steps[1][1] != f"account:{alice_id}"


async def test_enrolment_problems_are_clear(stack: Stack) -> None:
    username, _ = await register(stack)
    token = (await login(stack, username))["access_token"]
    none_pending = await stack.enrol.get("/v1/2fa/enrolment/qr.png", headers=bearer(token))
    assert none_pending.status_code == 409 and is_problem(none_pending)
    no_token = await stack.enrol.post("/v1/2fa/enrolment")
    assert no_token.status_code == 401 and is_problem(no_token)
    off = await stack.enrol.post("/v1/2fa/disable", headers=bearer(token), json={"otp": "123456"})
    assert off.status_code == 409 and off.json()["code"] == "twofa_not_enabled"
    await enable(stack, token)
    twice = await stack.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    assert twice.status_code == 409 and twice.json()["code"] == "twofa_already_enabled"
