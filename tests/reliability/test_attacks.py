"""Attacks on a running stack: two replicas of each service, two relays, real processes.

Each test is named after the attack it tries. Every attempt is counted in the report,
and so is every attempt that got through (all of them must be 0). The last test sweeps
Kafka, the audit log, the logs and the responses for every secret the attacks used.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import random
import secrets
import signal
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared.devtools.logins import SERVICE_GROUPS, SERVICE_LOGINS
from shared.devtools.servers import free_port
from shared.domain.twofactor.state import TwoFactorState
from shared.eventstore.snapshots import TwoFactorFold
from shared.eventstore.streams import twofactor_stream
from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import EventSigner, SignedRecord
from shared.platform.key_holders import KEY_HOLDERS
from shared.security.keys import SigningKeys
from shared.security.snapshot_mac import SnapshotKeys, snapshot_message
from shared.security.tokens import TokenIssuer
from tests.reliability.report import REPORT
from tests.reliability.stack import Stack
from tests.reliability.sweep import Recorder, assert_no_secrets
from tests.support.forbidden import denied_to
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.production import production_values
from tests.support.totp import otp

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio(loop_scope="module")]

RACERS = 100
STEP = timedelta(seconds=30)


# -- the stack and a client that keeps count --------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Registration closed (the default): accounts come from a support user, as in production.
    running = Stack(tmp_path_factory.mktemp("attacks"), settings={"TWOFA_OPEN_REGISTRATION": "0"})
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@dataclass
class User:
    username: str
    password: str
    account_id: str = ""
    secret: str | None = None
    codes: list[str] = field(default_factory=list)
    access: str = ""
    refresh: str = ""


class Api:
    """HTTP to the stack's replicas, recording every answer for the report and the sweep."""

    def __init__(self, stack: Stack, recorder: Recorder, client: httpx.AsyncClient) -> None:
        self.stack = stack
        self.recorder = recorder
        self.client = client

    def base(self, service: str, replica: int = 0) -> str:
        urls = self.stack.urls(service)
        return urls[replica % len(urls)]

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        replica: int = 0,
        token: str | None = None,
        body: Any = None,
        carries_secrets: bool = False,
        request_id: uuid.UUID | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if request_id is not None:  # the correlation id of whatever events it writes
            headers["X-Request-ID"] = str(request_id)
        url = self.base(service, replica) + path
        if stream:
            response = await self.first_part(method, url, body, headers)
        else:
            response = await self.client.request(method, url, json=body, headers=headers)
        REPORT.requests += 1
        self.recorder.response(response, carries_secrets=carries_secrets)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    async def first_part(
        self, method: str, url: str, body: Any, headers: dict[str, str]
    ) -> httpx.Response:
        """The answer, with its body in full if it is an error, else only its first part:
        a live tail (an SSE stream) that let a request in would never end."""
        async with self.client.stream(method, url, json=body, headers=headers) as streamed:
            if streamed.status_code >= 400:
                content = await streamed.aread()
            else:
                content = b""
                async for chunk in streamed.aiter_bytes():
                    content = chunk
                    break
        return httpx.Response(
            streamed.status_code,
            headers=streamed.headers,
            content=content,
            request=streamed.request,
        )

    async def events_written(self, request_ids: list[uuid.UUID]) -> dict[str, list[str]]:
        """The types of the events stored with each of these correlation ids (X-Request-ID)."""
        conn = await asyncpg.connect(self.stack.admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT metadata->>'correlation_id' AS id, event_type FROM events"
                " WHERE metadata->>'correlation_id' = ANY($1::text[]) ORDER BY position",
                [str(r) for r in request_ids],
            )
        finally:
            await conn.close()
        written: dict[str, list[str]] = {}
        for row in rows:
            written.setdefault(row["id"], []).append(row["event_type"])
        return written

    # -- flows -------------------------------------------------------------------------

    async def login(self, user: User, *, replica: int = 0) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            "auth",
            "/v1/login",
            replica=replica,
            body={"username": user.username, "password": user.password},
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def login_aal2(self, user: User, at: datetime, *, replica: int = 0) -> dict[str, Any]:
        assert user.secret is not None
        challenge = await self.login(user, replica=replica)
        code = self.recorder.secret(f"otp of {user.username}", otp(user.secret, at), code=True)
        answer = await self.call(
            "POST",
            "auth",
            "/v1/login/mfa",
            replica=replica,
            body={"mfa_token": challenge["mfa_token"], "otp": code},
        )
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        user.access, user.refresh = tokens["access_token"], tokens["refresh_token"]
        return tokens

    async def register(self, staff_token: str, prefix: str = "user") -> User:
        user = User(f"{prefix}.{uuid.uuid4().hex[:10]}", f"pass {secrets.token_urlsafe(12)}")
        self.recorder.secret(f"password of {user.username}", user.password)
        answer = await self.call(
            "POST",
            "auth",
            "/v1/accounts",
            token=staff_token,
            body={
                "username": user.username,
                "email": f"{user.username}@example.org",
                "password": user.password,
            },
        )
        assert answer.status_code == 201, answer.text
        user.account_id = answer.json()["account_id"]
        user.access = (await self.login(user))["access_token"]
        return user

    async def enable_2fa(self, user: User) -> None:
        """Through the enrolment API, confirmed with the code of the step before now, so
        the current and the next step stay free for logins."""
        started = await self.call(
            "POST", "enrolment", "/v1/2fa/enrolment", token=user.access, carries_secrets=True
        )
        assert started.status_code == 201, started.text
        user.secret = self.recorder.secret(
            f"totp secret of {user.username}", started.json()["secret"]
        )
        code = self.recorder.secret(
            f"confirming otp of {user.username}", otp(user.secret, now() - STEP), code=True
        )
        confirmed = await self.call(
            "POST",
            "enrolment",
            "/v1/2fa/enrolment/confirm",
            token=user.access,
            body={"otp": code},
            carries_secrets=True,
        )
        assert confirmed.status_code == 200, confirmed.text
        user.codes = confirmed.json()["recovery_codes"]
        for number, recovery_code in enumerate(user.codes):
            self.recorder.secret(f"recovery code {number} of {user.username}", recovery_code)


def now() -> datetime:
    return datetime.now(UTC)


def cli(stack: Stack, *argv: str, stdin: str = "") -> str:
    """``twofa accounts ...`` as an operator runs it: auth's keys and login."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *argv],
        env=stack.process_env("auth-cli"),
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@dataclass
class Staff:
    support: User
    support2: User
    security: User


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def staff(stack: Stack, recorder: Recorder) -> Staff:
    """Two support users and a security reviewer, each with 2FA, logged in with it."""
    users = {}
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, recorder, client)
        for name, role in (
            ("support.one", "support"),
            ("support.two", "support"),
            ("sec", "security"),
        ):
            user = User(f"{name}.{uuid.uuid4().hex[:6]}", f"staff {secrets.token_urlsafe(12)}")
            recorder.secret(f"password of {user.username}", user.password)
            created = cli(
                stack,
                *("accounts", "create", "--username", user.username),
                *("--email", f"{user.username}@example.org", "--password-stdin", "--role", role),
                stdin=user.password + "\n",
            )
            user.account_id = created.strip()
            user.access = (await api.login(user))["access_token"]
            await api.enable_2fa(user)
            await api.login_aal2(user, now())
            users[name] = user
    return Staff(users["support.one"], users["support.two"], users["sec"])


@pytest_asyncio.fixture(loop_scope="module")
async def api(stack: Stack, recorder: Recorder) -> AsyncIterator[Api]:
    # Idle connections are dropped before uvicorn's keep-alive of 5 s closes them: with
    # httpx's default (also 5 s) a connection the server was closing could be picked for
    # the next request, which then failed with ReadError (seen in the races, on a
    # loaded machine, after a hundred logins took longer than that).
    limits = httpx.Limits(max_connections=RACERS + 10, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        yield Api(stack, recorder, client)


def wrong_code(secret: str) -> str:
    live = {otp(secret, now() + STEP * k) for k in range(-3, 4)}
    while True:
        code = f"{secrets.randbelow(10**6):06d}"
        if code not in live:
            return code


# -- brute force ------------------------------------------------------------------------


async def test_brute_forcing_the_otp_step_locks_across_replicas_and_kills_the_mfa_token(
    api: Api, staff: Staff
) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    assert user.secret is not None
    challenge = await api.login(user)
    limit = 5  # TWOFA_OTP_MAX_FAILURES, the default
    statuses = []
    for guess in range(limit + 3):
        answer = await api.call(
            "POST",
            "auth",
            "/v1/login/mfa",
            replica=guess,  # alternate between the two auth replicas
            body={"mfa_token": challenge["mfa_token"], "otp": wrong_code(user.secret)},
        )
        statuses.append(answer.status_code)
        if answer.status_code == 423:
            assert int(answer.headers["Retry-After"]) > 0
    assert statuses[: limit - 1] == [401] * (limit - 1), statuses
    assert statuses[limit - 1] == 423, statuses  # the 5th wrong code locks
    assert set(statuses[limit:]) <= {401, 423}, statuses

    # The right code now: neither the old mfa token nor a new login gets through.
    right = api.recorder.secret("otp after lockout", otp(user.secret, now()), code=True)
    old_token = await api.call(
        "POST", "auth", "/v1/login/mfa", body={"mfa_token": challenge["mfa_token"], "otp": right}
    )
    fresh = await api.login(user, replica=1)
    new_token = await api.call(
        "POST",
        "auth",
        "/v1/login/mfa",
        replica=1,
        body={"mfa_token": fresh["mfa_token"], "otp": right},
    )
    assert old_token.status_code in (401, 423) and new_token.status_code == 423
    got_in = sum(s == 200 for s in statuses) + (old_token.status_code == 200)
    got_in += new_token.status_code == 200
    REPORT.attack("brute-force the OTP step", tried=len(statuses) + 2, succeeded=got_in)
    assert got_in == 0


# -- races ------------------------------------------------------------------------------


async def race(api: Api, requests: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
    """Send them all at once, alternating replicas; the status of each."""
    answers = await asyncio.gather(
        *(
            api.call("POST", service, path, replica=n, body=body)
            for n, (service, path, body) in enumerate(requests)
        )
    )
    return [a.status_code for a in answers]


async def challenges(api: Api, user: User, count: int) -> list[str]:
    tokens = await asyncio.gather(*(api.login(user, replica=n) for n in range(count)))
    return [t["mfa_token"] for t in tokens]


async def test_racing_one_recovery_code_100_times(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    tokens = await challenges(api, user, RACERS)
    code = user.codes[0]
    statuses = await race(
        api,
        [("auth", "/v1/login/mfa", {"mfa_token": t, "recovery_code": code}) for t in tokens],
    )
    wins = statuses.count(200)
    REPORT.attack("race one recovery code x100", tried=RACERS, succeeded=max(0, wins - 1))
    assert wins == 1, sorted(statuses)
    assert set(statuses) <= {200, 401, 423}


async def test_racing_one_totp_time_step_100_times(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    assert user.secret is not None
    tokens = await challenges(api, user, RACERS)
    code = api.recorder.secret("raced otp", otp(user.secret, now()), code=True)
    statuses = await race(
        api, [("auth", "/v1/login/mfa", {"mfa_token": t, "otp": code}) for t in tokens]
    )
    wins = statuses.count(200)
    REPORT.attack("race one TOTP time-step x100", tried=RACERS, succeeded=max(0, wins - 1))
    assert wins == 1, sorted(statuses)


async def test_racing_one_refresh_token_100_times(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    tokens = await api.login(user)
    statuses = await race(
        api,
        [("auth", "/v1/token/refresh", {"refresh_token": tokens["refresh_token"]})] * RACERS,
    )
    wins = statuses.count(200)
    REPORT.attack("race one refresh token x100", tried=RACERS, succeeded=max(0, wins - 1))
    assert wins == 1, sorted(statuses)
    assert set(statuses) <= {200, 401}


# -- replays ----------------------------------------------------------------------------


async def test_replaying_an_otp_within_its_window(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    assert user.secret is not None
    code = api.recorder.secret("replayed otp", otp(user.secret, now()), code=True)
    first = await challenges(api, user, 2)
    used = await api.call(
        "POST", "auth", "/v1/login/mfa", body={"mfa_token": first[0], "otp": code}
    )
    assert used.status_code == 200
    replayed = await api.call(
        "POST", "auth", "/v1/login/mfa", replica=1, body={"mfa_token": first[1], "otp": code}
    )
    REPORT.attack("replay an OTP within its window", tried=1, succeeded=replayed.status_code == 200)
    assert replayed.status_code == 401 and replayed.json()["code"] == "invalid_code"


async def test_reusing_an_mfa_token(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    assert user.secret is not None
    (token,) = await challenges(api, user, 1)
    code = api.recorder.secret("otp before mfa token reuse", otp(user.secret, now()), code=True)
    used = await api.call("POST", "auth", "/v1/login/mfa", body={"mfa_token": token, "otp": code})
    assert used.status_code == 200
    again = await api.call(
        "POST",
        "auth",
        "/v1/login/mfa",
        replica=1,
        body={"mfa_token": token, "recovery_code": user.codes[1]},
    )
    status = await api.call("GET", "enrolment", "/v1/2fa", token=used.json()["access_token"])
    REPORT.attack("reuse an mfa token", tried=1, succeeded=again.status_code == 200)
    assert again.status_code == 401 and again.json()["code"] == "invalid_mfa_token"
    assert status.json()["recovery_codes_left"] == 6  # the code sent with it was not spent


async def test_reusing_a_spent_refresh_token_revokes_the_session(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    first = await api.login(user)
    rotated = await api.call(
        "POST", "auth", "/v1/token/refresh", body={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    reused = await api.call(
        "POST",
        "auth",
        "/v1/token/refresh",
        replica=1,
        body={"refresh_token": first["refresh_token"]},
    )
    after = await api.call(
        "POST",
        "auth",
        "/v1/token/refresh",
        body={"refresh_token": rotated.json()["refresh_token"]},
    )
    me = await api.call("GET", "auth", "/v1/me", token=rotated.json()["access_token"])
    got_in = (reused.status_code == 200) + (after.status_code == 200) + (me.status_code == 200)
    REPORT.attack("reuse a spent refresh token", tried=3, succeeded=got_in)
    assert (reused.status_code, after.status_code, me.status_code) == (401, 401, 401)


# -- skipping the second step -----------------------------------------------------------

SOMEONE = uuid.uuid4()
REQUEST = uuid.uuid4().hex  # a reset request id of the right shape that nobody opened


@dataclass(frozen=True)
class BearerCall:
    """An operation that takes a bearer token, with a body that passes validation (so only
    the token decides), and the role it needs beyond a valid token, if any."""

    method: str
    service: str
    path: str
    body: Any = None
    role: str | None = None
    stream: bool = False  # answers with a live tail when it lets the request in


# Every operation that takes a bearer token, on every service. The wrong password ("x")
# and the OTP nobody computed are on purpose: whatever gets past the token check is
# refused further in (with another code) and may write a failure event, which the
# checks below would see.
BEARER_CALLS: list[BearerCall] = [
    BearerCall("GET", "auth", "/v1/me"),
    BearerCall("POST", "auth", "/v1/logout"),
    BearerCall("POST", "auth", "/v1/reauthenticate", {"password": "x"}),
    BearerCall(
        "POST", "auth", "/v1/account/password", {"current_password": "x", "new_password": "y"}
    ),
    BearerCall(
        "POST", "auth", "/v1/account/email", {"current_password": "x", "email": "a@b.example"}
    ),
    BearerCall("GET", "enrolment", "/v1/2fa"),
    BearerCall("POST", "enrolment", "/v1/2fa/enrolment"),
    BearerCall("GET", "enrolment", "/v1/2fa/enrolment/qr.svg"),
    BearerCall("POST", "enrolment", "/v1/2fa/enrolment/confirm", {"otp": "123456"}),
    BearerCall("POST", "enrolment", "/v1/2fa/recovery-codes", {"otp": "123456"}),
    BearerCall("POST", "enrolment", "/v1/2fa/disable", {"otp": "123456"}),
    BearerCall("GET", "enrolment", f"/v1/admin/accounts/{SOMEONE}/2fa", role="support"),
    BearerCall(
        "POST",
        "enrolment",
        f"/v1/admin/accounts/{SOMEONE}/2fa/reset-requests",
        {"ticket": "SUP-1", "reason": "lost phone"},
        role="support",
    ),
    BearerCall(
        "POST",
        "enrolment",
        f"/v1/admin/accounts/{SOMEONE}/2fa/reset-requests/{REQUEST}/approve",
        role="support",
    ),
    BearerCall(
        "POST",
        "enrolment",
        f"/v1/admin/accounts/{SOMEONE}/2fa/reset-requests/{REQUEST}/cancel",
        {"reason": "not needed"},
        role="support",
    ),
    BearerCall("GET", "audit", "/v1/audit/events", role="security"),
    BearerCall("GET", "audit", "/v1/audit/events/stream", role="security", stream=True),
    BearerCall("GET", "audit", "/v1/audit/export", role="security"),
    BearerCall("GET", "audit", "/v1/audit/verify", role="security"),
    BearerCall("GET", "audit", "/v1/audit/summary", role="security"),
    # Registration takes a support token while it is closed.
    BearerCall(
        "POST",
        "auth",
        "/v1/accounts",
        {"username": "new.user.x", "email": "n@example.org", "password": "long enough 123"},
        role="support",
    ),
]
ADMIN_CALLS = [call for call in BEARER_CALLS if call.role is not None]


@dataclass(frozen=True)
class Refusal:
    """An answer of the bearer check (shared.web.auth): status, problem code, and the
    reason a token error gives in its detail where that tells two refusals apart."""

    status: int
    code: str
    reason: str | None = None

    def matches(self, answer: httpx.Response) -> bool:
        body = problem_body(answer)
        return (
            answer.status_code == self.status
            and body.get("code") == self.code
            and (self.reason is None or body.get("detail") == f"reason: {self.reason}")
        )

    def __str__(self) -> str:
        return f"{self.status} {self.code}" + (f" ({self.reason})" if self.reason else "")


INVALID_TOKEN = Refusal(401, "invalid_token")  # forged, expired, not an access token, ended
REVOKED = Refusal(401, "invalid_token", "revoked")  # a session whose revocation was consumed
PASSWORD_ONLY = Refusal(401, "insufficient_user_authentication")  # acr aal1 where 2FA rules
AAL2_REQUIRED = Refusal(403, "aal2_required")  # the role is there, the second factor is not
Expected = Refusal | Callable[[BearerCall], tuple[Refusal, ...]]


def problem_body(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def refused_everywhere(
    api: Api,
    token: str,
    attack: str,
    expected: Expected,
    calls: list[BearerCall] = BEARER_CALLS,
) -> None:
    """Each of ``calls`` refuses ``token`` with exactly the ``expected`` refusal (or one of
    those named for that call, if a function), and stores no event: anything else means
    the request got further than the token check. Counted as ``attack``; a 2xx, or an
    event stored under the request's id, got in."""
    answers: list[tuple[BearerCall, uuid.UUID, httpx.Response]] = []
    for call in calls:
        request_id = uuid.uuid4()
        answer = await api.call(
            call.method,
            call.service,
            call.path,
            token=token,
            body=call.body,
            request_id=request_id,
            stream=call.stream,
        )
        answers.append((call, request_id, answer))
    written = await api.events_written([request_id for _, request_id, _ in answers])
    got_in, wrong = [], []
    for call, request_id, answer in answers:
        wanted = expected(call) if callable(expected) else (expected,)
        events = written.get(str(request_id), [])
        if answer.status_code < 400 or events:
            got_in.append((call.path, answer.status_code, events, answer.text[:200]))
        elif not any(refusal.matches(answer) for refusal in wanted):
            wanted_text = " or ".join(map(str, wanted))
            wrong.append(
                (call.path, f"wanted {wanted_text}", answer.status_code, answer.text[:200])
            )
        elif answer.status_code == 401:  # the challenge names the error too (RFC 6750)
            code = problem_body(answer)["code"]
            assert code in answer.headers.get("WWW-Authenticate", ""), (call.path, code)
    REPORT.attack(attack, tried=len(calls), succeeded=len(got_in))
    assert not got_in, got_in
    assert not wrong, wrong


async def with_staff_roles(api: Api, stack: Stack, prefix: str) -> User:
    """An account with the support and security roles (made as an operator does, with the
    CLI), logged in with its password: admin routes must refuse it for the missing second
    factor, not for a missing role."""
    user = User(f"{prefix}.{uuid.uuid4().hex[:10]}", f"pass {secrets.token_urlsafe(12)}")
    api.recorder.secret(f"password of {user.username}", user.password)
    created = cli(
        stack,
        *("accounts", "create", "--username", user.username),
        *("--email", f"{user.username}@example.org", "--password-stdin"),
        *("--role", "support", "--role", "security"),
        stdin=user.password + "\n",
    )
    user.account_id = created.strip()
    user.access = (await api.login(user))["access_token"]
    me = await api.call("GET", "auth", "/v1/me", token=user.access)
    assert sorted(me.json()["roles"]) == ["security", "support"], me.text
    return user


async def test_skipping_the_second_step_with_the_mfa_token(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    (token,) = await challenges(api, user, 1)
    await refused_everywhere(api, token, "mfa token as a bearer token", INVALID_TOKEN)


async def test_skipping_the_second_step_with_an_aal1_token_after_2fa_was_enabled(
    api: Api, stack: Stack
) -> None:
    user = await with_staff_roles(api, stack, "aal1.staff")
    stolen = (await api.login(user, replica=1))["access_token"]  # another password-only session
    await api.enable_2fa(user)
    # At once, before any consumer could revoke the other session: the store decides.
    await refused_everywhere(
        api, stolen, "aal1 token after 2FA was enabled", password_only_or_revoked
    )
    # The session that enabled 2FA proved the first code and keeps working.
    own = await api.call("GET", "enrolment", "/v1/2fa", token=user.access)
    assert own.status_code == 200 and own.json()["enabled"] is True


def password_only_or_revoked(call: BearerCall) -> tuple[Refusal, ...]:
    # Auth checks the acr against the account's 2FA stream before anything else. Enrolment
    # and audit do the same, but also learn from Kafka that enabling 2FA ended the other
    # sessions; once they have, the token is refused as revoked before its acr is read.
    return (PASSWORD_ONLY,) if call.service == "auth" else (PASSWORD_ONLY, REVOKED)


def refused_for_the_second_factor(call: BearerCall) -> tuple[Refusal, ...]:
    # Audit serves only logins made with the second factor; the support routes check the
    # role, then the second factor.
    return (PASSWORD_ONLY,) if call.service == "audit" else (AAL2_REQUIRED,)


async def test_admin_and_audit_routes_with_the_roles_but_a_password_only_token(
    api: Api, stack: Stack
) -> None:
    user = await with_staff_roles(api, stack, "aal1.roles")  # 2FA off: aal1 is all it has
    audit = [call for call in BEARER_CALLS if call.service == "audit"]
    assert {call.role for call in audit} == {"security"} and len(audit) == 5
    await refused_everywhere(
        api,
        user.access,
        "aal1 token with the support and security roles",
        refused_for_the_second_factor,
        calls=ADMIN_CALLS,
    )
    # The same token is good for the account's own operations.
    own = await api.call("GET", "enrolment", "/v1/2fa", token=user.access)
    assert own.status_code == 200 and own.json()["enabled"] is False


def forged_tokens(stack: Stack, staff: Staff) -> dict[str, str]:
    """Tokens an attacker could make from a real one, and with the stack's own key."""
    real = staff.security.access
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    head = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    escalated = {**claims, "roles": ["security", "support"], "sub": str(uuid.uuid4())}
    own_keys = SigningKeys.from_config(stack.process_env("auth-1")["TWOFA_JWT_SIGNING_KEYS"], None)
    stranger = SigningKeys.generate(head["kid"])  # same key id, another key
    issued = datetime.fromtimestamp(claims["iat"], UTC)

    def issue(keys: SigningKeys, at: datetime) -> str:
        issuer = TokenIssuer(keys, issuer=claims["iss"], access_ttl=timedelta(seconds=900))
        return issuer.issue_access(
            subject=claims["sub"],
            audience=claims["aud"],
            session_id=claims["sid"],
            auth_time=at,
            amr=claims["amr"],
            acr="aal2",
            roles=claims["roles"],
            now=at,
        )

    return {
        "tampered payload": f"{header}.{b64(escalated)}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "alg none": f"{b64({**head, 'alg': 'none'})}.{payload}.",
        "alg none, no signature part": f"{b64({**head, 'alg': 'none'})}.{payload}",
        "alg HS256 with the public key": f"{b64({**head, 'alg': 'HS256'})}.{payload}.{signature}",
        "wrongly signed": issue(stranger, issued),
        "expired": issue(own_keys, now() - timedelta(hours=2)),
        "not yet valid": issue(own_keys, now() + timedelta(hours=2)),
        "garbage": "not.a.token",
        "empty parts": "..",
    }


async def test_forged_jwts_tampered_expired_alg_none_wrongly_signed(
    api: Api, staff: Staff, stack: Stack
) -> None:
    real = await api.call("GET", "audit", "/v1/audit/verify", token=staff.security.access)
    assert real.status_code == 200, real.text  # the token they are made from works
    for name, token in forged_tokens(stack, staff).items():
        await refused_everywhere(api, token, f"forged JWT: {name}", INVALID_TOKEN)


async def test_a_revoked_session_is_refused_everywhere_once_its_revocation_is_consumed(
    api: Api, staff: Staff
) -> None:
    security = staff.security
    assert security.secret is not None
    revoked = security.access
    await api.login_aal2(security, now() + STEP, replica=1)  # a second session, kept
    ended = await api.call("POST", "auth", "/v1/logout", token=revoked)
    assert ended.status_code == 204

    async def consumed() -> bool:
        answers = [
            await api.call("GET", "enrolment", "/v1/2fa", replica=r, token=revoked) for r in (0, 1)
        ] + [
            await api.call("GET", "audit", "/v1/audit/verify", replica=r, token=revoked)
            for r in (0, 1)
        ]
        return all(a.status_code == 401 for a in answers)

    await eventually(consumed, within=30)
    await refused_everywhere(api, revoked, "token of a revoked session", INVALID_TOKEN)
    still = await api.call("GET", "audit", "/v1/audit/verify", token=security.access)
    assert still.status_code == 200, still.text  # the other session was not touched


# -- changes without the second factor --------------------------------------------------


async def test_changing_the_account_without_the_second_factor(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    assert user.secret is not None
    await api.login_aal2(user, now())
    wrong = wrong_code(user.secret)
    attempts = [
        ("enrolment", "/v1/2fa/disable", {}),
        ("enrolment", "/v1/2fa/disable", {"otp": wrong}),
        ("enrolment", "/v1/2fa/recovery-codes", {}),
        ("enrolment", "/v1/2fa/recovery-codes", {"otp": wrong}),
        (
            "auth",
            "/v1/account/password",
            {"current_password": user.password, "new_password": "x" * 20},
        ),
        (
            "auth",
            "/v1/account/password",
            {"current_password": user.password, "new_password": "x" * 20, "otp": wrong},
        ),
        (
            "auth",
            "/v1/account/email",
            {"current_password": user.password, "email": "m@evil.example"},
        ),
        (
            "auth",
            "/v1/account/email",
            {"current_password": user.password, "email": "m@evil.example", "otp": wrong},
        ),
    ]
    got_in = []
    for service, path, body in attempts:
        answer = await api.call("POST", service, path, token=user.access, body=body)
        if answer.status_code < 400:
            got_in.append((path, body, answer.status_code))
    status = await api.call("GET", "enrolment", "/v1/2fa", token=user.access)
    me = await api.call("GET", "auth", "/v1/me", token=user.access)
    REPORT.attack(
        "change 2FA, password or email without the second factor",
        tried=len(attempts),
        succeeded=len(got_in),
    )
    assert not got_in, got_in
    assert status.json()["enabled"] is True and status.json()["recovery_codes_left"] == 6
    assert me.json()["email"] == f"{user.username}@example.org"
    assert (await api.login(user))["mfa_required"] is True  # the old password still works


async def test_support_reset_without_the_role_and_a_support_user_resetting_themselves(
    api: Api, staff: Staff
) -> None:
    victim = await api.register(staff.support.access)
    await api.enable_2fa(victim)
    attacker = await api.register(staff.support.access)
    reset = {"ticket": "INC-1", "reason": "lost the phone"}

    def path(account_id: str, tail: str = "") -> str:
        return f"/v1/admin/accounts/{account_id}/2fa/reset-requests{tail}"

    tries = [
        # no role at all
        await api.call(
            "POST", "enrolment", path(victim.account_id), token=attacker.access, body=reset
        ),
        # the owner asking for their own reset is not support either
        await api.call(
            "POST", "enrolment", path(victim.account_id), token=victim.access, body=reset
        ),
        # support resetting their own second factor
        await api.call(
            "POST",
            "enrolment",
            path(staff.support.account_id),
            token=staff.support.access,
            body=reset,
        ),
    ]
    # A real request by one support user; the same user approving it is not four eyes.
    opened = await api.call(
        "POST", "enrolment", path(victim.account_id), token=staff.support.access, body=reset
    )
    assert opened.status_code == 201, opened.text
    request_id = opened.json()["request_id"]
    approve = path(victim.account_id, f"/{request_id}/approve")
    tries.append(await api.call("POST", "enrolment", approve, token=staff.support.access))
    tries.append(await api.call("POST", "enrolment", approve, token=attacker.access))
    got_in = [(t.request.url.path, t.status_code) for t in tries if t.status_code < 400]
    status = await api.call("GET", "enrolment", "/v1/2fa", token=victim.access)
    REPORT.attack(
        "support reset without the role, or of oneself", tried=len(tries), succeeded=len(got_in)
    )
    assert not got_in, got_in
    assert [t.status_code for t in tries[:2]] == [403, 403]
    assert status.json()["reset"]["approved_by"] is None


# -- enumeration ------------------------------------------------------------------------


def mann_whitney_z(a: list[float], b: list[float]) -> float:
    """The normal approximation of the Mann-Whitney U statistic (ties averaged)."""
    ranked = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
    n1, n2 = len(a), len(b)
    u = rank_sum - n1 * (n1 + 1) / 2
    return (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)


def shape(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("instance", "correlation_id")}


# At least this many wrong-password logins per group (existing and unknown usernames), in
# an order shuffled with a fixed seed, two at a time on each auth replica: whatever drifts
# during the run (load from other processes, warm caches) falls on both groups alike, so
# a difference the rank test finds is the service's. Every wrong password waits for the
# 300 ms floor, so one at a time would take two minutes; eight at a time took a third of
# the time of four but blurred the timings so much that a 2 ms leak scored |z| 3.9
# instead of 5.0.
ENUMERATION_SAMPLES = 200
ENUMERATION_SEED = 20261201
TRIES_PER_NAME = 5  # well below the password throttle (10 failures)
IN_FLIGHT = 4  # worker n sends to replica n % 2


async def timed_logins(api: Api, tries: list[tuple[bool, str]]) -> list[httpx.Response]:
    """POST a wrong password for each name, in this order, ``IN_FLIGHT`` at a time."""
    answers: list[httpx.Response | None] = [None] * len(tries)
    queue = iter(enumerate(tries))

    async def worker(replica: int) -> None:
        for index, (_, name) in queue:
            answers[index] = await api.call(
                "POST",
                "auth",
                "/v1/login",
                replica=replica,
                body={"username": name, "password": "wrong guess 1"},
            )

    await asyncio.gather(*(worker(n) for n in range(IN_FLIGHT)))
    return [answer for answer in answers if answer is not None]


async def test_account_enumeration_by_login_and_registration_timing_and_bodies(
    api: Api, staff: Staff
) -> None:
    names = math.ceil(ENUMERATION_SAMPLES / TRIES_PER_NAME)
    known = list(await asyncio.gather(*(api.register(staff.support.access) for _ in range(names))))
    unknown = [f"nobody.{uuid.uuid4().hex[:10]}" for _ in known]
    tries = [(True, user.username) for user in known for _ in range(TRIES_PER_NAME)]
    tries += [(False, name) for name in unknown for _ in range(TRIES_PER_NAME)]
    random.Random(ENUMERATION_SEED).shuffle(tries)
    answers = await timed_logins(api, tries)
    assert len(answers) == len(tries)
    timings: dict[bool, list[float]] = {True: [], False: []}
    bodies: dict[bool, set[str]] = {True: set(), False: set()}
    statuses: dict[bool, set[int]] = {True: set(), False: set()}
    for (exists, _), answer in zip(tries, answers, strict=True):
        timings[exists].append(answer.elapsed.total_seconds())  # sent to answered in full
        statuses[exists].add(answer.status_code)
        bodies[exists].add(json.dumps(shape(answer.json()), sort_keys=True))
    assert min(len(v) for v in timings.values()) >= ENUMERATION_SAMPLES
    z = mann_whitney_z(timings[True], timings[False])
    medians = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    REPORT.other["enumeration: login samples"] += sum(len(v) for v in timings.values())
    table = REPORT.table(
        "enumeration: wrong-password logins",
        *("username", "samples", "median ms", "p90 ms", "rank test z"),
    )
    for exists, group in ((True, "existing"), (False, "unknown")):
        p90 = statistics.quantiles(timings[exists], n=10)[-1] * 1000
        table.add(group, len(timings[exists]), f"{medians[exists]:.1f}", f"{p90:.1f}", f"{z:+.2f}")

    # Registration is closed: strangers get the same answer whatever the username.
    register = {}
    for exists, name in ((True, known[0].username), (False, unknown[0])):
        answer = await api.call(
            "POST",
            "auth",
            "/v1/accounts",
            body={"username": name, "email": f"{name}@example.org", "password": "some password 1"},
        )
        register[exists] = (answer.status_code, json.dumps(shape(answer.json()), sort_keys=True))

    leaked = (
        int(statuses[True] != statuses[False])
        + int(bodies[True] != bodies[False])
        + int(abs(z) > 3.0)
        + int(register[True] != register[False])
    )
    REPORT.attack("enumerate accounts by login/registration answers", tried=4, succeeded=leaked)
    assert statuses[True] == statuses[False] == {401}
    assert bodies[True] == bodies[False] and len(bodies[True]) == 1
    assert register[True] == register[False] and register[True][0] == 401
    # A stopwatch tells them apart if the ranks do (|z| > 3, p < 0.003), however small
    # the difference in milliseconds.
    assert abs(z) <= 3.0, (z, medians)


async def test_account_enumeration_by_the_password_throttle(api: Api, staff: Staff) -> None:
    user = await api.register(staff.support.access)
    stranger = f"nobody.{uuid.uuid4().hex[:10]}"
    seen: dict[bool, list[tuple[int, bool, str]]] = {True: [], False: []}
    for exists, name in ((True, user.username), (False, stranger)):
        for attempt in range(12):  # the throttle starts after 10
            answer = await api.call(
                "POST",
                "auth",
                "/v1/login",
                replica=attempt,
                body={"username": name, "password": "wrong guess 1"},
            )
            body = {k: v for k, v in shape(answer.json()).items() if k != "retry_after"}
            seen[exists].append(
                (answer.status_code, "Retry-After" in answer.headers, json.dumps(body))
            )
    leaked = seen[True] != seen[False]
    REPORT.attack("enumerate accounts by the password throttle", tried=1, succeeded=leaked)
    assert [s[0] for s in seen[True]] == [401] * 10 + [429] * 2
    assert seen[True] == seen[False]


# -- forged snapshots -------------------------------------------------------------------


async def test_forging_the_twofactor_snapshot_to_turn_2fa_off(api: Api, staff: Staff) -> None:
    """As the database's owner, write the user's ``twofactor`` snapshot with 2FA off at
    the stream's own version (so the repository would read no event after it)."""
    user = await api.register(staff.support.access)
    await api.enable_2fa(user)
    stream = twofactor_stream(user.account_id)
    disabled = orjson.dumps(TwoFactorFold().to_snapshot(TwoFactorState()))
    # Keys that are not the stack's: one under the stack's own key id, one under another.
    same_id, other_id = (SnapshotKeys({k: secrets.token_bytes(32)}, k) for k in ("local-1", "k9"))
    conn = await asyncpg.connect(api.stack.admin_dsn)
    try:
        version = await conn.fetchval(
            "SELECT max(stream_version) FROM events WHERE stream_id = $1", stream
        )
        message = snapshot_message(stream, version, "twofactor", 2, disabled)
        forgeries = [
            ("", b""),  # no MAC
            ("local-1", secrets.token_bytes(32)),  # garbage
            same_id.sign(message),
            other_id.sign(message),
        ]
        answers = []
        for replica, (key_id, mac) in enumerate(forgeries):
            await conn.execute(
                """INSERT INTO snapshots (stream_id, snapshot_type, stream_version,
                                          schema_version, state, key_id, mac)
                   VALUES ($1, 'twofactor', $2, 2, $3, $4, $5)
                   ON CONFLICT (stream_id, snapshot_type) DO UPDATE
                   SET stream_version = $2, state = $3, key_id = $4, mac = $5""",
                *(stream, version, disabled, key_id, mac),
            )
            answers.append(await api.login(user, replica=replica))
    finally:
        await conn.close()
    got_in = sum("access_token" in answer for answer in answers)
    REPORT.attack("forge the twofactor snapshot to turn 2FA off", tried=4, succeeded=got_in)
    assert [answer.get("mfa_required") for answer in answers] == [True] * 4
    assert got_in == 0
    alarms = api.stack.log_text("auth-1") + api.stack.log_text("auth-2")
    for reason in ("missing", "mismatch", "unknown_key"):
        assert f"snapshot of {stream} ignored ({reason})" in alarms


# -- metrics as an oracle ---------------------------------------------------------------

# What each public port of each service is asked, before and after the wrong passwords.
PUBLIC_PROBES = ("/metrics", "/metrics/", "/healthz", "/readyz")
PUBLIC_SERVICES = ("auth", "enrolment", "audit")
PER_REQUEST_HEADERS = ("date", "x-request-id")
ORACLE_NAMES = 4
ORACLE_TRIES = 4  # per name, well below the password throttle: 16 samples per group


def public_answer(answer: httpx.Response) -> str:
    """Status, body (its per-request fields dropped) and headers but date and request id."""
    try:
        body = json.dumps(shape(answer.json()), sort_keys=True)
    except ValueError:
        body = answer.text
    headers = sorted((k, v) for k, v in answer.headers.items() if k not in PER_REQUEST_HEADERS)
    return json.dumps([answer.status_code, body, headers])


def not_found(answer: str) -> bool:
    status: int = json.loads(answer)[0]
    return status == 404


async def public_answers(api: Api) -> dict[str, str]:
    """What every public port of every service answers to each probe, now."""
    targets = [
        (service, replica, path)
        for service in PUBLIC_SERVICES
        for replica in range(len(api.stack.urls(service)))
        for path in PUBLIC_PROBES
    ]
    answers = await asyncio.gather(
        *(api.call("GET", service, path, replica=replica) for service, replica, path in targets)
    )
    return {
        f"{api.base(service, replica)}{path}": public_answer(answer)
        for (service, replica, path), answer in zip(targets, answers, strict=True)
    }


async def test_metrics_or_any_public_answer_telling_a_real_username_from_an_unknown_one(
    api: Api, staff: Staff
) -> None:
    # Before metrics had a listener of their own, a real name's failure counted +1 on
    # the public /metrics (the consumers' events) and an unknown one's +0.
    known = list(
        await asyncio.gather(
            *(api.register(staff.support.access, "oracle") for _ in range(ORACLE_NAMES))
        )
    )
    unknown = [f"nobody.{uuid.uuid4().hex[:10]}" for _ in known]
    tries = [(True, user.username) for user in known for _ in range(ORACLE_TRIES)]
    tries += [(False, name) for name in unknown for _ in range(ORACLE_TRIES)]
    random.Random(ENUMERATION_SEED + 1).shuffle(tries)
    before = await public_answers(api)
    answers = await timed_logins(api, tries)
    assert len(answers) == len(tries)

    async def consumed() -> bool:  # the failures reached the consumers that count them
        conn = await asyncpg.connect(api.stack.admin_dsn)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM audit.entries"
                " WHERE event_type = 'login.failed' AND chain = ANY($1::text[])",
                [user.account_id for user in known],
            )
        finally:
            await conn.close()
        return bool(count >= len(known) * ORACLE_TRIES)

    await eventually(consumed, within=30)
    after = await public_answers(api)

    exposed = [url for url, answer in before.items() if "/metrics" in url and not not_found(answer)]
    changed = [url for url in before if before[url] != after[url]]
    seen: dict[bool, set[str]] = {True: set(), False: set()}
    timings: dict[bool, list[float]] = {True: [], False: []}
    for (exists, _), answer in zip(tries, answers, strict=True):
        seen[exists].add(public_answer(answer))
        timings[exists].append(answer.elapsed.total_seconds())
    z = mann_whitney_z(timings[True], timings[False])
    under_floor = [t for group in timings.values() for t in group if t < 0.3]
    leaked = (
        len(exposed)
        + len(changed)
        + int(seen[True] != seen[False])
        + int(abs(z) > 3.0)
        + int(bool(under_floor))
    )
    REPORT.attack(
        "metrics oracle: public /metrics, answers, timing by name",
        tried=len(before) + len(before) + 3,
        succeeded=leaked,
    )
    assert not exposed, exposed
    assert not changed, {url: (before[url], after[url]) for url in changed}
    assert seen[True] == seen[False] and len(seen[True]) == 1, seen
    assert not under_floor, under_floor  # every wrong password waits for the 300 ms floor
    assert abs(z) <= 3.0, (z, {k: statistics.median(v) for k, v in timings.items()})


# -- development keys in production ---------------------------------------------------

PRODUCTION_COMMANDS = {
    "auth": ["serve", "auth"],
    "enrolment": ["serve", "enrolment"],
    "audit": ["serve", "audit"],
    "relay": ["relay"],
}


@dataclass(frozen=True)
class ProductionStart:
    """A production start that must stop before serving, and what its error must name."""

    attack: str
    process: str
    env: dict[str, str]
    names: str


def production_starts(stack: Stack) -> list[ProductionStart]:
    """For each process, production with real keys but one that make run wrote (this
    stack's own ``dev.env``), each key it holds in turn; then a broker connection that
    does not authenticate, and no broker at all."""
    starts = []
    for process in PRODUCTION_COMMANDS:
        env = stack.process_env(f"{process}-1")
        real = production_values()
        env = {k: v for k, v in env.items() if k not in real} | {"TWOFA_ENV": "production"}
        sasl = {
            "TWOFA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TWOFA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TWOFA_KAFKA_SASL_USERNAME": f"twofa-{process}",
            "TWOFA_KAFKA_SASL_PASSWORD": secrets.token_hex(16),
        }
        held = {setting: use for setting, use in KEY_HOLDERS.items() if process in use.holders}
        valid = (
            env
            | sasl
            | {
                name: real[name]
                for setting, use in held.items()
                for name in (f"TWOFA_{n.upper()}" for n in (setting, *use.companions))
                if name in real
            }
        )
        made_by_make_run = stack.process_env(f"{process}-1")
        for setting, use in held.items():
            names = [f"TWOFA_{n.upper()}" for n in (setting, *use.companions)]
            dev = {n: made_by_make_run[n] for n in names if n in made_by_make_run}
            swapped = {k: v for k, v in valid.items() if k not in names} | dev
            starts.append(
                ProductionStart("make run's keys in production", process, swapped, names[0])
            )
        plaintext = {k: v for k, v in valid.items() if k not in sasl}
        starts.append(
            ProductionStart(
                "an unauthenticated broker in production",
                process,
                plaintext,
                "TWOFA_KAFKA_SECURITY_PROTOCOL",
            )
        )
        no_broker = {k: v for k, v in valid.items() if k != "TWOFA_KAFKA_BOOTSTRAP_SERVERS"}
        starts.append(
            ProductionStart(
                "no broker in production",
                process,
                no_broker | {"TWOFA_WITHOUT_BROKER": "true"},
                "TWOFA_WITHOUT_BROKER",
            )
        )
    return starts


async def refused_before_serving(start: ProductionStart) -> bool:
    """Did the process stop at once with a configuration error naming the setting?"""
    argv = PRODUCTION_COMMANDS[start.process]
    if argv[0] == "serve":
        argv = [*argv, "--port", str(free_port())]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        env=start.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(child.communicate(), 60)
    except TimeoutError:  # it is serving: the refusal did not happen
        child.kill()
        await child.wait()
        return False
    text = err.decode(errors="replace")
    secret_values = [v for k, v in start.env.items() if "KEY" in k and len(v) > 16]
    assert not any(value in text for value in secret_values), "a key in the error"
    return child.returncode == 2 and "configuration error" in text and start.names in text


async def test_development_keys_and_no_broker_security_in_production(stack: Stack) -> None:
    starts = production_starts(stack)
    results: list[bool] = []
    for batch in range(0, len(starts), 4):  # 2 cores: a few interpreters at a time
        chunk = starts[batch : batch + 4]
        results += await asyncio.gather(*(refused_before_serving(s) for s in chunk))
    for attack in sorted({s.attack for s in starts}):
        tried = [ok for s, ok in zip(starts, results, strict=True) if s.attack == attack]
        REPORT.attack(attack, tried=len(tried), succeeded=tried.count(False))
    started = [(s.process, s.names) for s, ok in zip(starts, results, strict=True) if not ok]
    assert started == [], f"started in production with: {started}"


# -- least privilege: each process's own login and keys ----------------------------------


async def forbidden_writes_that_went_through(dsn: str, group: str) -> tuple[int, list[str]]:
    """Each write ``group`` must not make, tried with a real login, each rolled back: the
    statements tried and those that went through (any other error fails the test)."""
    went_through, unexpected = [], []
    conn = await asyncpg.connect(dsn)
    try:
        for sql in denied_to(group):
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(sql)
                went_through.append(sql)
            except asyncpg.InsufficientPrivilegeError:
                pass
            except asyncpg.PostgresError as exc:
                unexpected.append(f"{sql}: {type(exc).__name__}")
            finally:
                await transaction.rollback()
    finally:
        await conn.close()
    assert not unexpected, unexpected
    return len(denied_to(group)), went_through


async def test_each_service_login_of_the_stack_is_refused_its_forbidden_writes(
    stack: Stack,
) -> None:
    """The logins the stack's processes really use (``Stack.process_env``), not new ones."""
    tried, got_in = 0, []
    for process, group in SERVICE_GROUPS.items():
        dsn = stack.process_env(f"{process}-1")["TWOFA_DATABASE_URL"]
        assert SERVICE_LOGINS[process] in dsn
        count, went_through = await forbidden_writes_that_went_through(dsn, group)
        tried += count
        got_in += [f"{process}: {sql}" for sql in went_through]
    REPORT.attack(
        "forbidden writes with each service's own login", tried=tried, succeeded=len(got_in)
    )
    assert got_in == []


async def test_audit_and_relay_processes_hold_no_key_they_must_not_have(stack: Stack) -> None:
    """Read from /proc/<pid>/environ of the running processes: what they were given."""
    tried, found = 0, []
    for name, process in stack.processes.items():
        kind = name.rsplit("-", 1)[0]
        if kind not in ("audit", "relay"):
            continue
        assert process.popen is not None and process.alive, name
        proc_file = Path(f"/proc/{process.popen.pid}/environ")
        environ = (await asyncio.to_thread(proc_file.read_bytes)).split(b"\0")
        given = {entry.partition(b"=")[0].decode() for entry in environ if entry}
        foreign = {
            f"TWOFA_{setting.upper()}"
            for setting, use in KEY_HOLDERS.items()
            if use.secret and kind not in use.holders
        }
        tried += len(foreign)
        found += [f"{name}: {variable}" for variable in sorted(given & foreign)]
        assert "TWOFA_DATABASE_URL" in given, name  # it is the process's own environment
    REPORT.attack(
        "a neighbour's keys in the audit and relay processes", tried=tried, succeeded=len(found)
    )
    assert found == []


# -- forged events on the bus ------------------------------------------------------------

EVENTS_TOPIC = "twofa.events.v1"
GROUPS = {"twofa.auth-sessions", "twofa.enrolment-labels", "twofa.audit"}
# The body of the issue's forged record, as the attacker wrote it (jsonb would normalise it).
SCHEMA_BREAKER = b'{"x": 1e16, "y": -0.0}'
REVOKING = {b"twofa.enabled", b"session.revoked"}  # what would end the victim's session


@dataclass
class Forgery:
    """One record an attacker put on the topic, and why every consumer must refuse it."""

    attack: str
    reason: str
    event_id: str
    headers: list[tuple[str, bytes]]
    value: bytes


def attacker_event(type_name: str, subject: str, data: dict[str, Any]) -> IntegrationEvent:
    """A well-formed event of ``type_name`` about ``subject``, as twofa would publish it."""
    return IntegrationEvent(
        id=uuid.uuid4(),
        type=type_name,
        source="/twofa/account" if type_name.startswith("session.") else "/twofa/twofactor",
        subject=subject,
        time=now(),
        data=data,
        dataschema=f"urn:twofa:event:{type_name}:v1",
        sequence=10**9,
        actor=f"account:{subject}",
    )


def forgeries(stack: Stack, victim: User, genuine: ConsumerRecord[bytes, bytes]) -> list[Forgery]:
    """Every forged record the attack puts on the bus (none signed by the stack's relay but
    the schema-invalid one, which stands for a relay that went wrong)."""
    account = victim.account_id
    session = decoded_claims(victim.access)["sid"]
    enabled = attacker_event(
        "twofa.enabled", account, {"session_id": str(uuid.uuid4()), "enabled_at": now().isoformat()}
    )
    revoked = attacker_event(
        "session.revoked", account, {"session_id": session, "reason": "logout"}
    )
    reset = attacker_event("twofa.reset_approved", account, {})
    impostor = EventSigner(SigningKeys.generate("local-1"))  # make run's key id, another key
    stranger = EventSigner(SigningKeys.generate("attacker-1"))
    relay_keys = stack.process_env("relay-1")["TWOFA_EVENT_SIGNING_KEYS"]
    relay = EventSigner(SigningKeys.from_config(relay_keys, None))
    out: list[Forgery] = []

    def add(attack: str, reason: str, headers: list[tuple[str, bytes]], value: bytes) -> None:
        out.append(Forgery(attack, reason, dict(headers)["ce_id"].decode(), headers, value))

    def fresh(event: IntegrationEvent) -> IntegrationEvent:
        return dataclasses.replace(event, id=uuid.uuid4())  # one id per forgery

    add("forged event: unsigned", "unsigned", fresh(reset).headers(), SCHEMA_BREAKER)
    unsigned = fresh(revoked)
    add("forged event: unsigned", "unsigned", unsigned.headers(), unsigned.body())
    for event in (enabled, revoked):
        add("forged event: wrong key", "bad_signature", *_pair(impostor.sign(fresh(event))))
        add("forged event: wrong key", "unknown_key", *_pair(stranger.sign(fresh(event))))
    for altered_body in (False, True):
        event_id = str(uuid.uuid4()).encode()  # a new id, or consumers drop it as a redelivery
        headers = [(k, event_id if k == "ce_id" else v) for k, v in genuine.headers]
        value = genuine.value or b""
        if altered_body:  # keep another session than the victim's: auth would end theirs
            body = json.loads(value)
            value = json.dumps({**body, "session_id": str(uuid.uuid4())}).encode()
        add("forged event: genuine record altered", "bad_signature", headers, value)
    invalid = dataclasses.replace(reset, id=uuid.uuid4(), data={"x": 1e16, "y": -0.0})
    add("forged event: signed, schema-invalid", "schema_invalid", *_pair(relay.sign(invalid)))
    return out


def _pair(record: SignedRecord) -> tuple[list[tuple[str, bytes]], bytes]:
    return record.headers, record.value


def decoded_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def dead_letters(stack: Stack, ids: set[str]) -> dict[str, set[tuple[str, str]]]:
    """(consumer group, reason) of every dead letter of the events ``ids``."""
    bootstrap = stack.env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"]

    def complete(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        found = by_id(records)
        return all(len(found.get(i, ())) >= len(GROUPS) for i in ids)

    def by_id(records: list[ConsumerRecord[bytes, bytes]]) -> dict[str, set[tuple[str, str]]]:
        found: dict[str, set[tuple[str, str]]] = {}
        for record in records:
            headers = {k: v.decode(errors="replace") for k, v in record.headers}
            if headers.get("ce_id") in ids:
                where = (headers.get("dlq_consumer", ""), headers.get("dlq_reason", ""))
                found.setdefault(headers["ce_id"], set()).add(where)
        return found

    records = await read_topic(bootstrap, EVENTS_TOPIC + ".dlq", until=complete, within=60)
    return by_id(records)


async def test_forged_events_on_the_bus_unsigned_wrong_key_altered_schema_invalid(
    api: Api, staff: Staff, stack: Stack
) -> None:
    victim = await api.register(staff.support.access, "victim")
    await api.enable_2fa(victim)
    await api.login_aal2(victim, now())
    bootstrap = stack.env["TWOFA_KAFKA_BOOTSTRAP_SERVERS"]

    def enabled_of_victim(record: ConsumerRecord[bytes, bytes]) -> bool:
        headers = dict(record.headers)
        return (
            headers.get("ce_type") == b"twofa.enabled" and record.key == victim.account_id.encode()
        )

    topic = await read_topic(
        bootstrap, EVENTS_TOPIC, until=lambda rs: any(map(enabled_of_victim, rs)), within=60
    )
    genuine = next(r for r in topic if enabled_of_victim(r))
    forged = forgeries(stack, victim, genuine)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)  # anyone who reaches the broker
    await producer.start()
    try:
        for record in forged:
            await producer.send_and_wait(
                EVENTS_TOPIC, record.value, key=victim.account_id.encode(), headers=record.headers
            )
    finally:
        await producer.stop()

    # A genuine revocation after them, on their partition: once both enrolment replicas
    # refuse its session, their revocation feeds have read (and refused) the forgeries.
    later = User(victim.username, victim.password, victim.account_id, victim.secret)
    await api.login_aal2(later, now() + STEP, replica=1)
    ended = await api.call("POST", "auth", "/v1/logout", token=later.access)
    assert ended.status_code == 204, ended.text

    async def feeds_passed() -> bool:
        answers = [
            await api.call("GET", "enrolment", "/v1/2fa", replica=r, token=later.access)
            for r in (0, 1)
        ]
        return all(a.status_code == 401 for a in answers)

    await eventually(feeds_passed, within=30)
    ids = {f.event_id for f in forged}
    letters = await dead_letters(stack, ids)
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        stored = {
            str(r["event_id"])
            for r in await conn.fetch(
                "SELECT event_id FROM audit.entries WHERE event_id = ANY($1::uuid[])"
                " UNION SELECT event_id FROM processed_events WHERE event_id = ANY($1::uuid[])",
                list(ids),
            )
        }
    finally:
        await conn.close()
    verified = await api.call("GET", "audit", "/v1/audit/verify", token=staff.security.access)
    assert verified.status_code == 200, verified.text
    sessions = [
        await api.call("GET", "auth", "/v1/me", replica=r, token=victim.access) for r in (0, 1)
    ] + [
        await api.call("GET", "enrolment", "/v1/2fa", replica=r, token=victim.access)
        for r in (0, 1)
    ]
    session_ended = sum(a.status_code != 200 for a in sessions)

    got_in: dict[str, int] = {}
    for record in forged:
        refused = letters.get(record.event_id, set()) == {(g, record.reason) for g in GROUPS}
        effect = record.event_id in stored or not refused
        got_in[record.attack] = got_in.get(record.attack, 0) + effect
    for attack in dict.fromkeys(f.attack for f in forged):
        tried = sum(1 for f in forged if f.attack == attack)
        REPORT.attack(attack, tried=tried, succeeded=got_in[attack])
    revoking = [f for f in forged if dict(f.headers)["ce_type"] in REVOKING]
    REPORT.attack(
        "forged twofa.enabled / session.revoked end a real session",
        tried=len(revoking),
        succeeded=min(session_ended, len(revoking)),
    )
    REPORT.attack(
        "forged events break the audit chain",
        tried=len(forged),
        succeeded=int(verified.json()["ok"] is not True),
    )
    assert not stored, f"forged events had an effect: {stored}"
    assert all(v == 0 for v in got_in.values()), (got_in, letters)
    assert session_ended == 0, [a.status_code for a in sessions]
    assert verified.json()["ok"] is True, verified.json()


# -- ready means caught up --------------------------------------------------------------


def label_of(started: httpx.Response) -> str:
    """The account part of the otpauth:// URI an enrolment answered with."""
    return unquote(urlsplit(started.json()["otpauth_uri"]).path).rsplit(":", 1)[1]


async def test_label_right_after_start_is_the_email(api: Api, staff: Staff) -> None:
    """Registered, then enrolment started at once on each replica, before the label
    projection can have the email: the QR label is the email, never the account id."""
    for replica in (0, 1):
        user = await api.register(staff.support.access, prefix="label")
        started = await api.call(
            "POST",
            "enrolment",
            "/v1/2fa/enrolment",
            replica=replica,
            token=user.access,
            carries_secrets=True,
        )
        assert started.status_code == 201, started.text
        api.recorder.secret(f"totp secret of {user.username}", started.json()["secret"])
        wrong = label_of(started) != f"{user.username}@example.org"
        REPORT.attack("label right after start", tried=1, succeeded=wrong)
        assert not wrong, (label_of(started), user.account_id)


LATE_REPLICA_PATHS = {"enrolment": "/v1/2fa", "audit": "/v1/audit/verify"}


async def first_ready(stack: Stack, client: httpx.AsyncClient, name: str) -> None:
    """Ask ``name``'s /readyz back to back until the first 200 (a fresh process: the
    token is then tried the moment it says ready, as a load balancer would route)."""
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        assert stack.processes[name].alive, stack.log_text(name)[-4000:]
        try:
            if (await client.get(stack.url(name) + "/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.01)  # not listening yet
    raise AssertionError(f"{name} not ready within 60 s")


async def test_revoked_sessions_token_at_a_fresh_replica(
    api: Api, staff: Staff, stack: Stack
) -> None:
    """A session ended, its revocation on Kafka; then a NEW enrolment and a NEW audit
    process start: once /readyz says 200 they refuse its (unexpired) token at once."""
    user = await with_staff_roles(api, stack, "late.replica")
    await api.enable_2fa(user)
    await api.login_aal2(user, now())
    revoked = user.access
    works = await api.call("GET", "audit", "/v1/audit/verify", token=revoked)
    assert works.status_code == 200, works.text  # a token that would get in
    ended = await api.call("POST", "auth", "/v1/logout", token=revoked)
    assert ended.status_code == 204

    async def on_kafka() -> bool:  # the running replicas refuse it: the record is out
        answer = await api.call("GET", "enrolment", "/v1/2fa", token=revoked)
        return answer.status_code == 401

    await eventually(on_kafka, within=30)
    # Fetches held 2 s, as a busy cluster may answer them: its revocation feed takes that
    # long to replay, and a /readyz that did not wait for it would say 200 meanwhile.
    slow = {"TWOFA_KAFKA_FETCH_MAX_WAIT_MS": "2000"}
    late = {stack.start_late_replica(s, **slow): path for s, path in LATE_REPLICA_PATHS.items()}
    try:
        for name, path in late.items():
            await first_ready(stack, api.client, name)  # and not a moment later
            answer = await api.client.get(
                stack.url(name) + path, headers={"Authorization": f"Bearer {revoked}"}
            )
            REPORT.requests += 1
            api.recorder.response(answer, carries_secrets=False)
            got_in = not INVALID_TOKEN.matches(answer)
            REPORT.attack("revoked session's token at a fresh replica", tried=1, succeeded=got_in)
            assert not got_in, (name, answer.status_code, answer.text)
    finally:
        for name in late:
            stack.kill(name, signal.SIGTERM)


# -- the sweep, after every attack -------------------------------------------------------


async def test_no_secret_in_kafka_audit_logs_or_responses_after_the_attacks(
    stack: Stack, recorder: Recorder, staff: Staff
) -> None:
    async def audit_caught_up() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(
                stack.urls("audit")[0] + "/v1/audit/verify",
                headers={"Authorization": f"Bearer {staff.security.access}"},
            )
        return answer.status_code == 200 and answer.json()["ok"] and answer.json()["entries"] > 0

    await eventually(audit_caught_up, within=30)
    await assert_no_secrets(stack, recorder)
