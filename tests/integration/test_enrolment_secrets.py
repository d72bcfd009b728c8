"""No 2FA secret leaves by a side door: not on Kafka, not in a log line, not in a response.

The auth and enrolment apps run in-process with their consumers, and the outbox relay
publishes to a fresh topic while a whole flow runs: turning 2FA on (with a wrong code
first), logging in with an OTP and with a recovery code, new codes, turning it off with
a recovery code, a second enrolment left pending, and a support reset requested,
approved and cancelled by two support accounts. Every log record is captured at DEBUG
and every response kept. Then the topic is read back: each record must follow the
published schemas, and every secret the flow used or the store holds is searched for
everywhere. Only the response that hands a secret out may hold it: the start of an
enrolment its secret and URI, the QR codes that URI, confirm and regeneration their
codes, login, the second step, reauthentication and refresh their own tokens.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import resvg_py
from aiokafka import ConsumerRecord

from services.auth.main import create_app as auth_app
from services.auth.usecases.account import set_role
from services.auth.usecases.deps import AuthDeps
from services.enrolment.main import create_app as enrolment_app
from shared.app.context import Context
from shared.domain import events as ev
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import START, EventStore
from shared.eventstore.streams import account_stream, twofactor_stream
from shared.messaging.contract import PUBLIC_EVENTS
from tests.integration.test_enrolment_api import decode_png
from tests.support.apps import client_for
from tests.support.clock import Clock
from tests.support.kafka import event_ids, read_topic
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.secretsearch import Secret, leaks, log_lines
from tests.support.settings import settings_for, with_kafka
from tests.support.totp import otp
from tests.unit.test_event_schemas import (
    body_validator,
    errors,
    headers_validator,
    payload_schema,
    text_headers,
)

pytestmark = pytest.mark.integration

TOKEN_FIELDS = ("access_token", "refresh_token", "device_token", "mfa_token")


@dataclass
class Answer:
    label: str
    response: httpx.Response
    allowed: frozenset[str]  # the secrets this response hands out


@dataclass
class Flow:
    """What the flow sent and got back, and the secrets it used or was given."""

    auth: httpx.AsyncClient
    enrol: httpx.AsyncClient
    core: AuthDeps
    clock: Clock
    secrets: list[Secret] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)

    def keep(self, name: str, value: str, *, code: bool = False) -> None:
        assert value, f"secret {name} is empty"
        self.secrets.append(Secret(name, value, code))

    def keep_codes(self, name: str, codes: list[str]) -> set[str]:
        """Recovery codes in every form a user may type them; returns those forms."""
        forms: set[str] = set()
        for number, code in enumerate(codes):
            compact = code.replace("-", "")
            for form, value in (
                ("display", code),
                ("compact", compact),
                ("upper display", code.upper()),
                ("upper compact", compact.upper()),
            ):
                self.keep(f"{name} {number} ({form})", value)
                forms.add(value)
        return forms

    def record(
        self,
        label: str,
        response: httpx.Response,
        status: int,
        allowed: AbstractSet[str] = frozenset(),
    ) -> dict[str, Any]:
        assert response.status_code == status, (label, response.status_code, response.text)
        own = set(allowed)
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").split(";")[0].endswith("json"):
            body = response.json()
            for name in TOKEN_FIELDS:
                if body.get(name):
                    self.keep(f"{name} from {label}", body[name])
                    own.add(body[name])
        self.answers.append(Answer(label, response, frozenset(own)))
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wrong_code(secret: str, now: datetime) -> str:
    """Six digits that are not the code of any step the window accepts."""
    live = {otp(secret, now + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "999999") if c not in live)


# The flow ---------------------------------------------------------------------------


async def register(flow: Flow, who: str, password: str) -> tuple[str, str]:
    username = f"{who}-{uuid.uuid4().hex[:8]}"
    flow.keep(f"password of {who}", password)
    body = flow.record(
        f"register {who}",
        await flow.auth.post(
            "/v1/accounts",
            json={"username": username, "email": f"{username}@example.org", "password": password},
        ),
        201,
    )
    flow.accounts.append(body["account_id"])
    return username, body["account_id"]


async def login(flow: Flow, label: str, username: str, password: str) -> dict[str, Any]:
    return flow.record(
        label,
        await flow.auth.post("/v1/login", json={"username": username, "password": password}),
        200,
    )


async def login_with(
    flow: Flow, label: str, username: str, password: str, **factor: str
) -> dict[str, Any]:
    challenge = await login(flow, f"{label} (password)", username, password)
    assert challenge["mfa_required"] is True
    return flow.record(
        label,
        await flow.auth.post("/v1/login/mfa", json={"mfa_token": challenge["mfa_token"], **factor}),
        200,
    )


async def start_enrolment(flow: Flow, who: str, token: str) -> tuple[str, str]:
    """Start an enrolment; its secret and URI may appear in this answer only."""
    response = await flow.enrol.post("/v1/2fa/enrolment", headers=bearer(token))
    assert response.status_code == 201, response.text
    body = response.json()
    secret, uri = body["secret"], body["otpauth_uri"]
    flow.keep(f"totp secret of {who}", secret)
    flow.keep(f"otpauth uri of {who}", uri)
    flow.record(f"start enrolment of {who}", response, 201, {secret, uri})
    return secret, uri


async def confirm(flow: Flow, who: str, token: str, secret: str) -> list[str]:
    code = otp(secret, flow.clock())
    flow.keep(f"otp confirming {who}", code, code=True)
    response = await flow.enrol.post(
        "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": code}
    )
    codes: list[str] = response.json()["recovery_codes"]
    allowed = flow.keep_codes(f"recovery code of {who}", codes)
    flow.record(f"confirm {who}", response, 200, allowed)
    return codes


async def until_refused(flow: Flow, label: str, token: str) -> None:
    """Poll the auth service until ``token``'s session is revoked (a consumer reacted)."""

    async def refused() -> bool:
        return (await flow.auth.get("/v1/me", headers=bearer(token))).status_code == 401

    await eventually(refused, within=30)
    flow.record(label, await flow.auth.get("/v1/me", headers=bearer(token)), 401)


async def support_user(flow: Flow, who: str) -> tuple[str, str]:
    """A support account with 2FA on, logged in with an OTP (acr aal2): (id, token)."""
    password = f"the passphrase of {who} {uuid.uuid4().hex[:6]}"
    username, account_id = await register(flow, who, password)
    await set_role(flow.core, Context(), username=username, role="support", granted=True)
    first = await login(flow, f"{who} logs in", username, password)
    spare = await login(flow, f"{who} logs in elsewhere", username, password)
    secret, _ = await start_enrolment(flow, who, first["access_token"])
    await confirm(flow, who, first["access_token"], secret)
    # Turning 2FA on ends the other sessions; wait for it before the next login.
    await until_refused(flow, f"{who}'s other session ends", spare["access_token"])
    flow.clock.advance(seconds=30)
    code = otp(secret, flow.clock())
    flow.keep(f"otp of {who}'s login", code, code=True)
    session = await login_with(flow, f"{who} logs in with otp", username, password, otp=code)
    return account_id, session["access_token"]


async def run_flow(flow: Flow) -> None:
    password = "correct horse battery staple"
    username, _ = await register(flow, "keeper", password)
    first = await login(flow, "password-only login", username, password)
    spare = await login(flow, "login elsewhere", username, password)
    fresh = flow.record(
        "reauthenticate",
        await flow.auth.post(
            "/v1/reauthenticate", headers=bearer(first["access_token"]), json={"password": password}
        ),
        200,
    )
    token = fresh["access_token"]

    secret, uri = await start_enrolment(flow, "keeper", token)
    for kind in ("svg", "png"):
        image = await flow.enrol.get(f"/v1/2fa/enrolment/qr.{kind}", headers=bearer(token))
        flow.record(f"qr.{kind}", image, 200, {secret, uri})
        png = (
            image.content if kind == "png" else bytes(resvg_py.svg_to_bytes(svg_string=image.text))
        )
        assert decode_png(png) == uri  # the QR code holds the URI and nothing else

    wrong = wrong_code(secret, flow.clock())
    flow.keep("wrong otp", wrong, code=True)
    flow.record(
        "wrong confirm",
        await flow.enrol.post(
            "/v1/2fa/enrolment/confirm", headers=bearer(token), json={"otp": wrong}
        ),
        401,
    )
    codes = await confirm(flow, "keeper", token, secret)
    flow.record("status", await flow.enrol.get("/v1/2fa", headers=bearer(token)), 200)
    await until_refused(flow, "the other session ends", spare["access_token"])

    flow.clock.advance(seconds=30)
    code = otp(secret, flow.clock())
    flow.keep("otp used to log in", code, code=True)
    session = await login_with(flow, "login with otp", username, password, otp=code)
    refreshed = flow.record(
        "refresh",
        await flow.auth.post("/v1/token/refresh", json={"refresh_token": session["refresh_token"]}),
        200,
    )

    flow.clock.advance(seconds=30)
    code = otp(secret, flow.clock())
    flow.keep("otp used for new codes", code, code=True)
    response = await flow.enrol.post(
        "/v1/2fa/recovery-codes", headers=bearer(refreshed["access_token"]), json={"otp": code}
    )
    new_codes: list[str] = response.json()["recovery_codes"]
    allowed = flow.keep_codes("new recovery code", new_codes)
    flow.record("regenerate codes", response, 200, allowed)
    assert not set(new_codes) & set(codes)

    by_code = await login_with(
        flow, "login with a recovery code", username, password, recovery_code=new_codes[0]
    )
    flow.record(
        "disable with a recovery code",
        await flow.enrol.post(
            "/v1/2fa/disable",
            headers=bearer(by_code["access_token"]),
            json={"recovery_code": new_codes[1].replace("-", "").upper()},
        ),
        204,
    )
    await until_refused(flow, "sessions end with 2FA off", refreshed["access_token"])
    await start_enrolment(flow, "keeper, again", by_code["access_token"])  # left pending
    flow.record(
        "status while pending",
        await flow.enrol.get("/v1/2fa", headers=bearer(by_code["access_token"])),
        200,
    )
    await support_reset(flow)


async def support_reset(flow: Flow) -> None:
    """Support A opens a reset for a user who lost everything, B approves, A cancels."""
    password = "a phone lost in the lake"
    username, user_id = await register(flow, "lost-phone", password)
    token = (await login(flow, "lost-phone logs in", username, password))["access_token"]
    secret, _ = await start_enrolment(flow, "lost-phone", token)
    await confirm(flow, "lost-phone", token, secret)
    _, alice = await support_user(flow, "support-a")
    _, bob = await support_user(flow, "support-b")

    path = f"/v1/admin/accounts/{user_id}/2fa/reset-requests"
    opened = flow.record(
        "reset requested",
        await flow.enrol.post(
            path,
            headers=bearer(alice),
            json={"ticket": "SUP-4711", "reason": "lost phone and codes; identity checked"},
        ),
        201,
    )
    request_id = opened["request_id"]
    flow.record(
        "reset approved",
        await flow.enrol.post(f"{path}/{request_id}/approve", headers=bearer(bob)),
        200,
    )
    flow.record(
        "support view",
        await flow.enrol.get(f"/v1/admin/accounts/{user_id}/2fa", headers=bearer(bob)),
        200,
    )
    flow.record(
        "reset cancelled",
        await flow.enrol.post(
            f"{path}/{request_id}/cancel",
            headers=bearer(alice),
            json={"reason": "the user found the phone"},
        ),
        204,
    )


# What the store holds, and what Kafka got ---------------------------------------------


async def stored_secrets(core: AuthDeps, accounts: list[str]) -> list[Secret]:
    """Hashes and ciphertexts as the events table holds them, and their distinctive parts."""
    found: list[Secret] = []

    def keep(name: str, value: str, separator: str) -> None:
        found.append(Secret(name, value))
        found.append(Secret(f"{name} (last part)", value.rsplit(separator, 1)[-1]))

    for account_id in accounts:
        events = await core.store.read_stream(account_stream(account_id))
        events += await core.store.read_stream(twofactor_stream(account_id))
        for recorded in events:
            event = recorded.event
            where = f"{event.type} of {account_id[:8]} v{recorded.stream_version}"
            if isinstance(event, ev.AccountRegistered | ev.PasswordChanged):
                keep(f"password hash ({where})", event.password_hash, "$")
            elif isinstance(event, ev.EnrolmentStarted):
                keep(f"encrypted totp secret ({where})", event.encrypted_secret, ".")
            elif isinstance(event, ev.TwoFactorEnabled | ev.RecoveryCodesRegenerated):
                for number, code_hash in enumerate(event.recovery_code_hashes):
                    keep(f"recovery code hash {number} ({where})", code_hash, "$")
            elif isinstance(event, ev.SessionStarted | ev.SessionRefreshed):
                found.append(Secret(f"refresh token hash ({where})", event.refresh_token_hash))
    kinds = {s.name.split(" (")[0] for s in found}
    assert {
        "password hash",
        "encrypted totp secret",
        "recovery code hash 5",
        "refresh token hash",
    } <= kinds, kinds
    enrolments = [s for s in found if s.name.startswith("encrypted totp secret (")]
    assert len(enrolments) == 2 * 5  # keeper twice, lost-phone, both support accounts
    return found


async def published(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` once each public event of the store is there."""

    async def public_ids() -> set[str]:
        return {
            str(recorded.event_id)
            for recorded in await store.read_all(START, 10_000)
            if PUBLIC_EVENTS.to_integration(recorded) is not None
        }

    expected = await public_ids()
    records = await read_topic(
        kafka_bootstrap, topic, until=lambda r: expected <= set(event_ids(r)), within=60
    )
    ids = event_ids(records)
    assert len(ids) == len(set(ids))  # each once
    # Nothing internal. The consumers may have appended since (a revoked session), so
    # compare with the store as it is now.
    assert set(ids) <= await public_ids()
    return records


def response_text(response: httpx.Response) -> str:
    return response.content.decode("utf-8", "replace")


@pytest.fixture
async def flow(
    database_url: str, kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Flow]:
    """Both apps with their consumers, and the relay publishing to ``topic`` meanwhile."""
    caplog.set_level(logging.DEBUG)
    settings = settings_for(
        database_url,
        **with_kafka(kafka_bootstrap, topic),
    )
    clock = Clock()
    auth, enrol = auth_app(settings, clock=clock), enrolment_app(settings, clock=clock)
    async with client_for(auth) as a, client_for(enrol) as e:
        core: AuthDeps = auth.state.deps
        async with relaying(database_url, EventStore(core.pool, REGISTRY), kafka_bootstrap, topic):
            yield Flow(a, e, core, clock)


async def test_no_2fa_secret_reaches_kafka_logs_or_another_response(
    flow: Flow, kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    the_flow = flow
    await run_flow(the_flow)
    core = the_flow.core
    stored = await stored_secrets(core, the_flow.accounts)
    records = await published(core.store, kafka_bootstrap, topic)
    rows = await core.pool.fetch("SELECT data::text AS data, metadata::text AS meta FROM events")
    assert len(rows) == await core.pool.fetchval("SELECT count(*) FROM events")
    secrets = the_flow.secrets + stored
    assert len(the_flow.answers) >= 45 and len(records) >= 55, (
        len(the_flow.answers),
        len(records),
    )
    names = [s.name for s in secrets]
    assert len(names) == len(set(names)), "two secrets share a name"

    # Every record follows the published contract.
    types = set()
    for record in records:
        headers = text_headers(record.headers)
        event_type = headers["ce_type"]
        where = f"{event_type} {headers['ce_id']}"
        types.add(event_type)
        assert event_type in PUBLIC_EVENTS.public_types(), where
        assert errors(headers_validator(event_type), headers) == [], where
        assert headers["ce_dataschema"] == payload_schema(event_type)["$id"], where
        assert record.value is not None and record.key == headers["ce_subject"].encode(), where
        assert errors(body_validator(event_type), orjson.loads(record.value)) == [], where
    assert {
        "twofa.enrolment_started",
        "twofa.otp_failed",
        "twofa.enabled",
        "twofa.otp_verified",
        "twofa.recovery_codes_regenerated",
        "twofa.recovery_code_used",
        "twofa.disabled",
        "twofa.reset_requested",
        "twofa.reset_approved",
        "twofa.reset_cancelled",
        "session.revoked",
    } <= types, types

    # No secret on Kafka: not in a key, a value or a header.
    for record in records:
        for surface in (record.key or b"", record.value or b"", *(v for _, v in record.headers)):
            found = leaks(surface.decode("utf-8", "replace"), secrets)
            assert not found, f"{found} on Kafka in a {dict(record.headers)['ce_type']!r} record"

    # None in a log line.
    lines = log_lines(caplog.records)
    assert any("/v1/2fa/enrolment/confirm" in line for line in lines), "requests not logged"
    everything = "\n".join([*lines, caplog.text])
    for name in leaks(everything, secrets):
        secret = next(s for s in secrets if s.name == name)
        line = next(line for line in lines if secret.pattern().search(line))
        pytest.fail(f"{name} in the log line {line[:300]!r}")

    # The store holds hashes and ciphertexts only, never what they were made from.
    for row in rows:
        found = leaks(row["data"] + row["meta"], the_flow.secrets)
        assert not found, f"{found} stored in clear"

    # Each response holds only the secrets it hands out.
    for answer in the_flow.answers:
        text = response_text(answer.response)
        found = leaks(text, secrets, answer.allowed) + leaks(str(answer.response.headers), secrets)
        assert not found, f"{found} in the response to {answer.label}"
    handed_out = {value for answer in the_flow.answers for value in answer.allowed}
    assert {s.value for s in the_flow.secrets if "otpauth uri" in s.name} <= handed_out
