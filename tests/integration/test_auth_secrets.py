"""No secret leaves by a side door: not on Kafka, not in a log line, not in a response.

A whole auth flow runs in-process against real PostgreSQL with every log record captured;
then the outbox relay publishes every stored event to a fresh topic, which is read back.
Every secret the flow used or stored is then searched for everywhere. Only the responses
that hand out tokens (login, the second step, reauthentication, refresh) may hold them,
and each only its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord

from services.auth.main import create_app
from services.auth.usecases.deps import AuthDeps
from shared.domain import events as ev
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import START, EventStore
from shared.eventstore.streams import account_stream, twofactor_stream
from shared.messaging.contract import PUBLIC_EVENTS
from tests.support.apps import client_for
from tests.support.clock import Clock
from tests.support.kafka import read_topic
from tests.support.relay import relaying
from tests.support.secretsearch import Secret, leaks, log_lines
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for
from tests.support.totp import otp

pytestmark = pytest.mark.integration

OLD_PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase for 2026"
WRONG_PASSWORD = "a wrong but plausible passphrase"
TOKEN_FIELDS = ("access_token", "refresh_token", "device_token", "mfa_token")


@dataclass
class Flow:
    """What the flow sent and got back, and the secrets it used or created."""

    secrets: list[Secret] = field(default_factory=list)
    responses: list[tuple[str, httpx.Response]] = field(default_factory=list)

    def keep(self, name: str, value: str, *, code: bool = False) -> None:
        assert value, f"secret {name} is empty"
        self.secrets.append(Secret(name, value, code))

    def record(self, label: str, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, (label, response.status_code, response.text)
        self.responses.append((label, response))
        if not response.content:
            return {}
        body: dict[str, Any] = response.json()
        for name in TOKEN_FIELDS:
            if body.get(name):
                self.keep(f"{name} from {label}", body[name])
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def run_flow(client: httpx.AsyncClient, core: AuthDeps, clock: Clock) -> tuple[Flow, str]:
    flow = Flow()
    flow.keep("old password", OLD_PASSWORD)
    flow.keep("new password", NEW_PASSWORD)
    flow.keep("wrong password", WRONG_PASSWORD)
    username = "secret.keeper"
    registered = flow.record(
        "register",
        await client.post(
            "/v1/accounts",
            json={"username": username, "email": "keeper@example.org", "password": OLD_PASSWORD},
        ),
        201,
    )
    account_id = registered["account_id"]
    flow.record(
        "password-only login",
        await client.post("/v1/login", json={"username": username, "password": OLD_PASSWORD}),
        200,
    )

    enrolled = await enable_through_domain(core, account_id, clock())
    flow.keep("totp secret", enrolled.secret)
    for number, code in enumerate(enrolled.codes):
        compact = code.replace("-", "")
        for form, value in (
            ("display", code),
            ("compact", compact),
            ("upper display", code.upper()),
            ("upper compact", compact.upper()),
        ):
            flow.keep(f"recovery code {number} ({form})", value)

    async def challenge(label: str) -> str:
        body = flow.record(
            label,
            await client.post("/v1/login", json={"username": username, "password": password}),
            200,
        )
        assert body["mfa_required"] is True
        token: str = body["mfa_token"]
        return token

    password = OLD_PASSWORD
    code = otp(enrolled.secret, clock())
    flow.keep("otp used for login", code, code=True)
    with_otp = flow.record(
        "login with otp",
        await client.post(
            "/v1/login/mfa", json={"mfa_token": await challenge("login (otp)"), "otp": code}
        ),
        200,
    )
    flow.record(
        "login with recovery code (display)",
        await client.post(
            "/v1/login/mfa",
            json={
                "mfa_token": await challenge("login (recovery, display)"),
                "recovery_code": enrolled.codes[0],
            },
        ),
        200,
    )
    flow.record(
        "login with recovery code (compact)",
        await client.post(
            "/v1/login/mfa",
            json={
                "mfa_token": await challenge("login (recovery, compact)"),
                "recovery_code": enrolled.codes[1].replace("-", "").upper(),
            },
        ),
        200,
    )

    clock.advance(seconds=30)
    code = otp(enrolled.secret, clock())
    flow.keep("otp used to reauthenticate", code, code=True)
    flow.record(
        "reauthenticate",
        await client.post(
            "/v1/reauthenticate",
            headers=bearer(with_otp["access_token"]),
            json={"password": OLD_PASSWORD, "otp": code},
        ),
        200,
    )
    refreshed = flow.record(
        "refresh",
        await client.post("/v1/token/refresh", json={"refresh_token": with_otp["refresh_token"]}),
        200,
    )
    access = refreshed["access_token"]

    clock.advance(seconds=30)
    code = otp(enrolled.secret, clock())
    flow.keep("otp used to change the password", code, code=True)
    flow.record(
        "change password",
        await client.post(
            "/v1/account/password",
            headers=bearer(access),
            json={"current_password": OLD_PASSWORD, "new_password": NEW_PASSWORD, "otp": code},
        ),
        204,
    )
    password = NEW_PASSWORD

    clock.advance(seconds=30)
    code = otp(enrolled.secret, clock())
    flow.keep("otp used to change the email", code, code=True)
    flow.record(
        "change email",
        await client.post(
            "/v1/account/email",
            headers=bearer(access),
            json={"current_password": NEW_PASSWORD, "email": "keeper@new.example.org", "otp": code},
        ),
        204,
    )

    wrong = otp(enrolled.secret, clock() + timedelta(hours=1))
    live = {otp(enrolled.secret, clock() + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    assert wrong not in live  # (a 3-in-a-million coincidence would make it right)
    flow.keep("wrong otp", wrong, code=True)
    flow.record(
        "wrong otp",
        await client.post(
            "/v1/login/mfa", json={"mfa_token": await challenge("login (wrong otp)"), "otp": wrong}
        ),
        401,
    )
    flow.record(
        "wrong password",
        await client.post("/v1/login", json={"username": username, "password": WRONG_PASSWORD}),
        401,
    )
    flow.record("me", await client.get("/v1/me", headers=bearer(access)), 200)
    flow.record("logout", await client.post("/v1/logout", headers=bearer(access)), 204)
    return flow, account_id


async def stored_secrets(core: AuthDeps, account_id: str) -> list[Secret]:
    """The hashes and the ciphertext as the store holds them, and their distinctive parts."""
    found: list[Secret] = []

    def keep(name: str, value: str, separator: str) -> None:
        found.append(Secret(name, value))
        found.append(Secret(f"{name} (last part)", value.rsplit(separator, 1)[-1]))

    events = await core.store.read_stream(account_stream(account_id))
    events += await core.store.read_stream(twofactor_stream(account_id))
    for recorded in events:
        event = recorded.event
        if isinstance(event, ev.AccountRegistered | ev.PasswordChanged):
            keep(f"password hash ({event.type})", event.password_hash, "$")
        elif isinstance(event, ev.EnrolmentStarted):
            keep("encrypted totp secret", event.encrypted_secret, ".")
        elif isinstance(event, ev.TwoFactorEnabled):
            for number, code_hash in enumerate(event.recovery_code_hashes):
                keep(f"recovery code hash {number}", code_hash, "$")
        elif isinstance(event, ev.SessionStarted | ev.SessionRefreshed):
            found.append(Secret(f"refresh token hash ({event.type})", event.refresh_token_hash))
    names = {s.name for s in found}
    assert {
        "password hash (account.registered)",
        "password hash (account.password_changed)",
        "encrypted totp secret",
        "recovery code hash 5",
        "refresh token hash (session.refreshed)",
    } <= names, names
    return found


async def publish_everything(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every stored event through the real relay to ``topic``, and the records read back."""
    expected = sum(
        PUBLIC_EVENTS.to_integration(recorded) is not None
        for recorded in await store.read_all(START, 10_000)
    )
    async with relaying(database_url, store, kafka_bootstrap, topic):
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= expected)
    assert len(records) == expected
    return records


async def test_no_secret_reaches_kafka_logs_or_another_response(
    database_url: str,
    pool: asyncpg.Pool,
    kafka_bootstrap: str,
    topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    app = create_app(settings_for(database_url, without_broker=True), clock=clock)
    async with client_for(app) as client:
        core: AuthDeps = app.state.deps
        flow, account_id = await run_flow(client, core, clock)
        stored = await stored_secrets(core, account_id)
        rows = await core.pool.fetch(
            "SELECT data::text AS data, metadata::text AS meta FROM events"
        )
    records = await publish_everything(
        database_url, EventStore(pool, REGISTRY), kafka_bootstrap, topic
    )
    secrets = flow.secrets + stored
    assert len(flow.responses) >= 17 and len(records) >= 20, (len(flow.responses), len(records))

    for record in records:
        surfaces = [record.key or b"", record.value or b"", *(v for _, v in record.headers)]
        for surface in surfaces:
            found = leaks(surface.decode("utf-8", "replace"), secrets)
            assert not found, f"{found} on Kafka in a {dict(record.headers)['ce_type']!r} record"

    lines = log_lines(caplog.records)
    assert any("/v1/login/mfa" in line for line in lines), "the requests were not logged"
    for line in [*lines, caplog.text]:
        found = leaks(line, secrets)
        assert not found, f"{found} in the log line {line[:200]!r}"

    # The store itself: hashes and ciphertext only, never what they were made from.
    for row in rows:
        found = leaks(row["data"] + row["meta"], flow.secrets)
        assert not found, f"{found} stored in clear"

    for label, response in flow.responses:
        body = response.json() if response.content else {}
        own = {body[name] for name in TOKEN_FIELDS if isinstance(body, dict) and body.get(name)}
        found = leaks(response.text, secrets, own) + leaks(str(response.headers), secrets)
        assert not found, f"{found} in the response to {label}"
