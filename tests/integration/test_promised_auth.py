"""What the README promises about locks, roles and sessions, shown over HTTP and the CLI.

The lock doubles (15, 30, 60 minutes) on the service's own clock; ``twofa accounts
grant-role`` / ``revoke-role`` reach the next token; turning 2FA off, or a support reset
taking effect, ends the account's other sessions (the auth service consumes the events).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from services.auth.main import create_app as auth_app
from services.auth.usecases.account import register_account
from services.auth.usecases.deps import AuthDeps
from services.enrolment.main import create_app as enrolment_app
from shared.app.context import Context
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from tests.integration.test_enrolment_api import (
    PASSWORD,
    Stack,
    bearer,
    enable,
    login,
    login_with_otp,
    register,
    support_user,
)
from tests.support.apps import client_for, is_problem
from tests.support.cli import twofa_async
from tests.support.clock import Clock
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for, with_kafka
from tests.support.totp import otp

pytestmark = pytest.mark.integration


async def test_each_lock_doubles_15_then_30_then_60_minutes(database_url: str) -> None:
    clock = Clock()
    app = auth_app(settings_for(database_url, without_broker=True), clock=clock)
    async with client_for(app) as client:
        stack = Stack(client, client, client, app.state.deps, clock, None)
        username, account_id = await register(stack)
        enrolled = await enable_through_domain(stack.core, account_id, clock())
        for minutes in (15, 30, 60):
            challenge = (await login(stack, username))["mfa_token"]
            answers = [
                await client.post("/v1/login/mfa", json={"mfa_token": challenge, "otp": "000000"})
                for _ in range(5)
            ]
            # Counted afresh after each lock: the first wrong code is not refused as locked.
            assert [a.json()["code"] for a in answers] == ["invalid_code"] * 4 + [
                "second_factor_locked"
            ]
            assert [a.json().get("attempts_left") for a in answers[:4]] == [4, 3, 2, 1]
            locked = answers[4]
            assert locked.status_code == 423 and is_problem(locked)
            assert locked.headers["Retry-After"] == str(minutes * 60)
            assert locked.json()["retry_after"] == minutes * 60
            until = clock() + timedelta(minutes=minutes)
            assert locked.json()["locked_until"] == until.isoformat()
            # One second before its end the right code is still refused; at its end it is over.
            clock.advance(minutes=minutes, seconds=-1)
            fresh = (await login(stack, username))["mfa_token"]
            early = await client.post(
                "/v1/login/mfa", json={"mfa_token": fresh, "otp": otp(enrolled.secret, clock())}
            )
            assert early.status_code == 423 and early.headers["Retry-After"] == "1"
            clock.advance(seconds=1)


async def test_grant_role_and_revoke_role_reach_the_next_token(database_url: str) -> None:
    """Closed registration needs a ``support`` token: a grant opens it, a revoke closes it
    from the next token on (a refreshed one or a new login)."""
    clock = Clock()
    app = auth_app(
        settings_for(database_url, open_registration=False, without_broker=True), clock=clock
    )
    username = f"support-{uuid.uuid4().hex[:8]}"
    async with client_for(app) as client:
        stack = Stack(client, client, client, app.state.deps, clock, None)
        account_id = await register_account(
            stack.core, Context(), username=username, email="s@example.org", password=PASSWORD
        )
        enrolled = await enable_through_domain(stack.core, account_id, clock())

        async def registers(token: str) -> httpx.Response:
            name = f"new-{uuid.uuid4().hex[:8]}"
            body = {"username": name, "email": f"{name}@example.org", "password": PASSWORD}
            return await client.post("/v1/accounts", json=body, headers=bearer(token))

        before = await login_with_otp(stack, username, enrolled.secret)
        refused = await registers(before["access_token"])
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"

        granted = await twofa_async(database_url, "accounts", "grant-role", username, "support")
        assert granted == f"grant-role: support for {username}\n"
        clock.advance(seconds=30)
        session = await login_with_otp(stack, username, enrolled.secret)
        assert (await registers(session["access_token"])).status_code == 201

        revoked = await twofa_async(database_url, "accounts", "revoke-role", username, "support")
        assert revoked == f"revoke-role: support for {username}\n"
        refreshed = await client.post(
            "/v1/token/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        after_refresh = await registers(refreshed.json()["access_token"])
        assert after_refresh.status_code == 403 and after_refresh.json()["code"] == "forbidden"
        clock.advance(seconds=30)
        relogged = await login_with_otp(stack, username, enrolled.secret)
        after_login = await registers(relogged["access_token"])
        assert after_login.status_code == 403 and after_login.json()["code"] == "forbidden"
        me = await client.get("/v1/me", headers=bearer(relogged["access_token"]))
        assert me.json()["roles"] == []


@pytest.fixture
async def sessions(database_url: str, kafka_bootstrap: str, topic: str) -> AsyncIterator[Stack]:
    """Auth (consuming the two-factor events) and enrolment, the store relayed to Kafka.

    The cooling-off is shorter than an access token's life, so a token refused after it
    was revoked, not expired.
    """
    settings = settings_for(
        database_url, **with_kafka(kafka_bootstrap, topic), reset_cooling_off_seconds=600
    )
    clock = Clock()
    auth, enrol = auth_app(settings, clock=clock), enrolment_app(settings, clock=clock)
    async with client_for(auth) as a, client_for(enrol) as e:
        core: AuthDeps = auth.state.deps
        async with relaying(database_url, EventStore(core.pool, REGISTRY), kafka_bootstrap, topic):
            yield Stack(a, e, e, core, clock, enrol.state)


async def ended(stack: Stack, tokens: dict[str, str]) -> None:
    """Wait until the auth service refuses the session, then check exactly how.

    The caller showed the same token working at the same (test) time, before the change.
    """

    async def refused() -> bool:
        me = await stack.auth.get("/v1/me", headers=bearer(tokens["access_token"]))
        return me.status_code == 401

    await eventually(refused, within=30)
    me = await stack.auth.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert me.json()["code"] == "invalid_token" and is_problem(me)
    renewed = await stack.auth.post(
        "/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert renewed.status_code == 401 and renewed.json()["code"] == "invalid_refresh_token"


async def still_on(stack: Stack, tokens: dict[str, str]) -> None:
    me = await stack.auth.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text


async def test_turning_2fa_off_ends_the_other_sessions(sessions: Stack) -> None:
    stack = sessions
    username, _ = await register(stack)
    first = await login(stack, username)  # password only: the session that turns 2FA on
    secret, _ = await enable(stack, first["access_token"])
    stack.clock.advance(seconds=30)
    this = await login_with_otp(stack, username, secret)
    stack.clock.advance(seconds=30)
    other = await login_with_otp(stack, username, secret)
    stack.clock.advance(seconds=30)
    for session in (first, this, other):
        await still_on(stack, session)
    off = await stack.enrol.post(
        "/v1/2fa/disable",
        headers=bearer(this["access_token"]),
        json={"otp": otp(secret, stack.clock())},
    )
    assert off.status_code == 204, off.text
    await ended(stack, other)
    await ended(stack, first)
    await still_on(stack, this)


async def test_a_support_reset_taking_effect_ends_every_session_before_it(
    sessions: Stack,
) -> None:
    stack = sessions
    username, user_id = await register(stack)
    secret, _ = await enable(stack, (await login(stack, username))["access_token"])
    stack.clock.advance(seconds=30)
    phone = await login_with_otp(stack, username, secret)
    stack.clock.advance(seconds=30)
    laptop = await login_with_otp(stack, username, secret)
    _, alice, _ = await support_user(stack)
    _, bob, _ = await support_user(stack)
    path = f"/v1/admin/accounts/{user_id}/2fa/reset-requests"
    opened = await stack.enrol.post(
        path, headers=bearer(alice), json={"ticket": "SUP-1", "reason": "lost phone and codes"}
    )
    request_id = opened.json()["request_id"]
    approved = await stack.enrol.post(f"{path}/{request_id}/approve", headers=bearer(bob))
    assert approved.status_code == 200, approved.text
    stack.clock.advance(minutes=10, seconds=1)
    for session in (phone, laptop):  # approved and due, but nothing recorded it yet
        await still_on(stack, session)
    # The first login after the delay records the reset and needs the password only.
    after = await login(stack, username)
    assert after["acr"] == "aal1"
    await ended(stack, phone)
    await ended(stack, laptop)
    await still_on(stack, after)  # the login that came after the reset is not "before" it
