"""The bad-input matrix's machinery: one world of users and tokens, a case sent, the checks.

One database, one topic, the auth and enrolment apps and the outbox relay serve the whole
matrix: a refused request changes nothing, so the cases cannot disturb each other, and
each case counts the events before and after itself. The auth app runs without its Kafka
consumer, so nothing writes events in the background and the count is exact; the
enrolment app runs with its revocation feed, which the ended and revoked sessions need.
The cases themselves are listed in tests/integration/test_bad_inputs.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import httpx
import jwt
import orjson

from services.auth.main import create_app as auth_app
from services.auth.usecases.account import set_role
from services.auth.usecases.deps import AuthDeps
from services.enrolment.main import create_app as enrolment_app
from shared.app.context import Context
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.kafka import ensure_topics
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer
from tests.support import servers
from tests.support.apps import client_for, is_problem
from tests.support.clock import Clock
from tests.support.database import admin_sql, event_count
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.seeding import Enrolled, enable_through_domain
from tests.support.settings import settings_for, with_kafka, without_broker

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "an entirely new passphrase"
TICKET = "SUP-4711"
REASON = "Lost phone and printed codes; identity checked by video call"

# Placeholders a case's path or body may hold; each is replaced by the world's real value.
USER = "<user>"  # the username of "plain", the user auth's cases run as
USER_UPPER = "<user-in-upper-case>"
NEW_USER = "<new-user>"  # a username no account has, new each time
MFA = "<mfa-token>"  # the open login challenge of "enabled"
REFRESH = "<refresh-token>"  # plain's
ACCOUNT = "<account-id>"  # plain's
SESSION = "<session-id>"  # plain's
TARGET = "<target>"  # the account id of "target"
RESET_TARGET = "<reset-target>"  # the account id of "reset_target"
REQUEST = "<request-id>"  # the reset request open on reset_target
SUPPORT_A = "<support-a>"  # the account id of "support_a"

VALID = object()  # "the endpoint's valid body"

# The world --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One endpoint under test, and what a valid request to it is."""

    name: str
    service: Literal["auth", "enrolment"]
    method: str
    path: str
    user: str = "plain"  # whose token "valid" means
    body: Any = None  # a valid body, for the cases that send one
    bearer: bool = True  # needs an access token
    # The body fields a refusal may not repeat; None: every value (not key: a problem
    # may name a field it refuses). Auth's bodies hold usernames and addresses too.
    secret_fields: frozenset[str] | None = None


@dataclass
class User:
    username: str
    account_id: str
    access_token: str
    refresh_token: str
    session_id: str


@dataclass
class Env:
    """The apps and the users every case runs against.

    Users: plain (password only, acr aal1), pending (an enrolment pending its first
    code), enabled (2FA on, with an open login challenge), target and reset_target (2FA
    on; a support reset pends on reset_target), support_a and support_b (the support
    role, at aal2; support_a opened the reset), support_aal1 (the role, password only).
    """

    auth: httpx.AsyncClient
    enrol: httpx.AsyncClient
    core: AuthDeps
    clock: Clock
    users: dict[str, User] = field(default_factory=dict)
    request_id: str = ""
    mfa_token: str = ""
    authorizations: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)  # may appear in no refused response

    def client(self, endpoint: Endpoint) -> httpx.AsyncClient:
        return self.auth if endpoint.service == "auth" else self.enrol


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fresh_name() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def session_of(token: str) -> str:
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


async def register(env: Env, username: str) -> str:
    response = await env.auth.post(
        "/v1/accounts",
        json={"username": username, "email": f"{username}@example.org", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    account_id: str = response.json()["account_id"]
    return account_id


async def password_login(env: Env, username: str) -> dict[str, Any]:
    response = await env.auth.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def plain_user(env: Env, *, role: str | None = None) -> User:
    """A user without 2FA (so its tokens say acr aal1), optionally with a role."""
    username = fresh_name()
    account_id = await register(env, username)
    if role:
        await set_role(env.core, Context(), username=username, role=role, granted=True)
    tokens = await password_login(env, username)
    env.secrets |= {tokens["access_token"], tokens["refresh_token"]}
    return User(
        username,
        account_id,
        tokens["access_token"],
        tokens["refresh_token"],
        session_of(tokens["access_token"]),
    )


async def two_factor_user(env: Env, *, role: str | None = None) -> tuple[User, Enrolled]:
    """A user with 2FA on (turned on before any login), logged in with it (acr aal2)."""
    username = fresh_name()
    account_id = await register(env, username)
    if role:
        await set_role(env.core, Context(), username=username, role=role, granted=True)
    enrolled = await enable_through_domain(env.core, account_id, env.clock())
    env.secrets |= {enrolled.secret, *enrolled.codes, *(c.replace("-", "") for c in enrolled.codes)}
    challenge = (await password_login(env, username))["mfa_token"]
    session = await env.auth.post(
        "/v1/login/mfa", json={"mfa_token": challenge, "recovery_code": enrolled.codes[0]}
    )
    assert session.status_code == 200, session.text
    tokens = session.json()
    env.secrets |= {challenge, tokens["access_token"], tokens["refresh_token"]}
    user = User(
        username,
        account_id,
        tokens["access_token"],
        tokens["refresh_token"],
        session_of(tokens["access_token"]),
    )
    return user, enrolled


def mint(
    env: Env,
    user: User,
    *,
    issuer: TokenIssuer | None = None,
    audience: str | None = None,
    at: timedelta = timedelta(0),
    login_age: timedelta = timedelta(0),
    acr: str = "aal1",
    roles: tuple[str, ...] = (),
    subject: str | None = None,
    session_id: str | None = None,
) -> str:
    """An access token for ``user``'s session, issued ``at`` from now, logged in
    ``login_age`` before that; by default the real issuer's, for the real audience."""
    now = env.clock() + at
    return (issuer or env.core.issuer).issue_access(
        subject=subject or user.account_id,
        audience=audience or env.core.settings.jwt_audience,
        session_id=session_id or user.session_id,
        auth_time=now - login_age,
        amr=["pwd"],
        acr=acr,
        roles=list(roles),
        now=now,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_tokens(env: Env, victim: User) -> dict[str, str]:
    """Access tokens each wrong in exactly one way, for the victim's account and session."""
    settings = env.core.settings
    claims = jwt.decode(victim.access_token, options={"verify_signature": False})
    # The same key id as the real ring: only the signature can tell them apart.
    foreign = TokenIssuer(SigningKeys.generate("test-key"), issuer=settings.jwt_issuer)
    other_issuer = TokenIssuer(settings.signing_keys(), issuer="https://evil.example")
    public = settings.signing_keys().public_keys()["test-key"].public_bytes_raw()
    none_header = _b64(orjson.dumps({"alg": "none", "typ": "at+jwt", "kid": "test-key"}))
    header, payload, signature = victim.access_token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "expired": mint(env, victim, at=-timedelta(hours=2)),
        "not_yet_valid": mint(env, victim, at=timedelta(hours=2)),
        "foreign_key": mint(env, victim, issuer=foreign),
        "foreign_key_same_kid": mint(env, victim, issuer=foreign, acr="aal2", roles=("support",)),
        "alg_none": f"{none_header}.{_b64(orjson.dumps(claims))}.",
        "hs256": jwt.encode(
            claims, public, algorithm="HS256", headers={"kid": "test-key", "typ": "at+jwt"}
        ),
        "wrong_audience": mint(env, victim, audience="another-service"),
        "wrong_issuer": mint(env, victim, issuer=other_issuer),
        "tampered": f"{header}.{payload}.{flipped}",
        "unknown_account": mint(
            env, victim, subject=str(uuid.uuid4()), session_id=uuid.uuid4().hex
        ),
    }


async def revoked_and_ended_tokens(env: Env) -> dict[str, str]:
    """A token of a session ended by logout and one revoked by a password change, once
    the enrolment service has learned both from Kafka (polled, never slept for)."""
    keeper = await plain_user(env)
    ended = (await password_login(env, keeper.username))["access_token"]
    revoked = (await password_login(env, keeper.username))["access_token"]
    env.secrets |= {ended, revoked}
    logout = await env.auth.post("/v1/logout", headers=bearer(ended))
    assert logout.status_code == 204, logout.text
    changed = await env.auth.post(
        "/v1/account/password",
        headers=bearer(keeper.access_token),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204, changed.text

    async def enrolment_refuses_both() -> bool:
        for token in (ended, revoked):
            response = await env.enrol.get("/v1/2fa", headers=bearer(token))
            if response.status_code != 401:
                return False
        return True

    await eventually(enrolment_refuses_both, within=30)
    kept = await env.enrol.get("/v1/2fa", headers=bearer(keeper.access_token))
    assert kept.status_code == 200, kept.text
    return {"ended_session": ended, "revoked_session": revoked}


@contextlib.asynccontextmanager
async def world(
    postgres_url: str, template_database: str, kafka_bootstrap: str
) -> AsyncIterator[Env]:
    """The apps, the relay and the users, on a database and a topic of their own."""
    name = f"twofa_test_{uuid.uuid4().hex[:12]}"
    topic = f"twofa.events.v1.test-{uuid.uuid4().hex[:10]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    await ensure_topics(kafka_bootstrap, [topic, topic + ".dlq"])
    database_url = servers.with_database(postgres_url, name)
    settings = settings_for(database_url, **with_kafka(kafka_bootstrap, topic))
    # No auth consumer: nothing but the requests themselves may write events.
    quiet_auth = without_broker(settings)
    clock = Clock()
    auth, enrol = auth_app(quiet_auth, clock=clock), enrolment_app(settings, clock=clock)
    try:
        async with (
            client_for(auth, raise_app_exceptions=False) as a,
            client_for(enrol, raise_app_exceptions=False) as e,
        ):
            core: AuthDeps = auth.state.deps
            store = EventStore(core.pool, REGISTRY)
            async with relaying(database_url, store, kafka_bootstrap, topic):
                yield await _populate(Env(a, e, core, clock))
    finally:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _populate(env: Env) -> Env:
    env.secrets |= {PASSWORD, NEW_PASSWORD}
    users = env.users
    users["plain"] = await plain_user(env)
    users["pending"] = await plain_user(env)
    started = await env.enrol.post(
        "/v1/2fa/enrolment", headers=bearer(users["pending"].access_token)
    )
    assert started.status_code == 201, started.text
    env.secrets |= {started.json()["secret"], started.json()["otpauth_uri"]}
    users["enabled"], _ = await two_factor_user(env)
    users["target"], _ = await two_factor_user(env)
    users["reset_target"], _ = await two_factor_user(env)
    users["support_a"], _ = await two_factor_user(env, role="support")
    users["support_b"], _ = await two_factor_user(env, role="support")
    users["support_aal1"] = await plain_user(env, role="support")

    opened = await env.enrol.post(
        f"/v1/admin/accounts/{users['reset_target'].account_id}/2fa/reset-requests",
        headers=bearer(users["support_a"].access_token),
        json={"ticket": TICKET, "reason": REASON},
    )
    assert opened.status_code == 201, opened.text
    env.request_id = opened.json()["request_id"]

    plain = users["plain"]
    env.mfa_token = (await password_login(env, users["enabled"].username))["mfa_token"]
    forged = forged_tokens(env, plain)
    owner_aal1 = mint(env, users["reset_target"])
    stale = mint(env, plain, login_age=timedelta(minutes=10))
    sessions = await revoked_and_ended_tokens(env)
    env.secrets |= {env.mfa_token, *forged.values(), owner_aal1, stale}
    env.authorizations = {
        **{f"as:{name}": bearer(user.access_token) for name, user in users.items()},
        "owner_aal1": bearer(owner_aal1),
        "stale_login": bearer(stale),
        "no_token": {},
        "empty_bearer": {"Authorization": "Bearer "},
        "bearer_without_space": {"Authorization": f"Bearer{plain.access_token}"},
        "garbage": {"Authorization": "Bearer garbage-garbage-garbage"},
        "three_garbage_segments": {"Authorization": "Bearer aaaa.bbbb.cccc"},
        "basic_scheme": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "valid_token_wrong_scheme": {"Authorization": f"Token {plain.access_token}"},
        "token_and_trailing_word": {"Authorization": f"Bearer {plain.access_token} extra"},
        "oversized": {"Authorization": "Bearer " + "a" * 9000},
        "mfa_token_as_access": bearer(env.mfa_token),
        "refresh_token_as_access": bearer(plain.refresh_token),
        **{kind: bearer(token) for kind, token in forged.items()},
        **{kind: bearer(token) for kind, token in sessions.items()},
    }
    return env


# A case, sent and checked -----------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One request that must be refused: what it sends, and the answer expected."""

    endpoint: Endpoint
    body: Any = VALID  # JSON (with placeholders), VALID, or None for no body
    raw: bytes | None = None  # sent byte for byte instead of ``body``
    content_type: str | None = "application/json"
    auth: str = "valid"  # a key of Env.authorizations, or "valid": the endpoint's user
    path: str | None = None  # instead of the endpoint's path
    method: str | None = None  # instead of the endpoint's method
    headers: tuple[tuple[str, str], ...] = ()
    streamed: bool = False  # sent chunked, with no Content-Length
    status: tuple[int, ...] = (422,)  # the statuses it may get
    codes: tuple[str, ...] = ()  # the problem codes it may get, where they say more
    bearer_challenge: bool = False  # answered with a WWW-Authenticate: Bearer challenge


def fill(value: Any, env: Env) -> Any:
    """``value`` with every placeholder replaced by the world's real value."""
    if isinstance(value, str):
        users = env.users
        for marker, real in (
            (NEW_USER, fresh_name()),
            (USER_UPPER, users["plain"].username.upper()),
            (USER, users["plain"].username),
            (MFA, env.mfa_token),
            (REFRESH, users["plain"].refresh_token),
            (ACCOUNT, users["plain"].account_id),
            (SESSION, users["plain"].session_id),
            (TARGET, users["target"].account_id),
            (RESET_TARGET, users["reset_target"].account_id),
            (REQUEST, env.request_id),
            (SUPPORT_A, users["support_a"].account_id),
        ):
            value = value.replace(marker, real)
        return value
    if isinstance(value, dict):
        return {fill(k, env): fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(item, env) for item in value]
    return value


def values_in(
    value: Any, fields: frozenset[str] | None = None, key: str | None = None
) -> Iterator[str]:
    """The string values in ``value`` (those under one of ``fields``, if given)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from values_in(v, fields, k)
    elif isinstance(value, list):
        for item in value:
            yield from values_in(item, fields, key)
    elif isinstance(value, str) and (fields is None or key in fields):
        yield value


def echoed(text: str, secrets: set[str]) -> list[str]:
    """The values (of six characters or more) that ``text`` repeats, raw or JSON-escaped."""
    found = []
    for secret in secrets:
        if len(secret) < 6:
            continue
        escaped = json.dumps(secret)[1:-1]
        if secret in text or escaped in text:
            found.append(secret[:40])
    return found


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 16 * 1024):
        yield data[start : start + 16 * 1024]


async def send(env: Env, case: Bad) -> tuple[httpx.Response, set[str], int]:
    """Send ``case``; the response, the values it must not repeat, and the events written."""
    endpoint = case.endpoint
    auth = f"as:{endpoint.user}" if case.auth == "valid" else case.auth
    headers = dict(env.authorizations[auth])
    headers.update(case.headers)
    secrets = set(env.secrets)
    secrets |= {value.split(" ", 1)[-1] for value in env.authorizations[auth].values()}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    path = fill(case.path or endpoint.path, env)
    if case.path is not None:  # a bad path segment must not come back either
        secrets |= {part for part in path.split("/") if part not in endpoint.path}
    content: bytes | None
    if case.raw is not None:  # surrogateescape: bytes that are not UTF-8 go through as sent
        text = fill(case.raw.decode("utf-8", "surrogateescape"), env)
        content = text.encode("utf-8", "surrogateescape")
    elif case.body is None or (case.body is VALID and endpoint.body is None):
        content = None
    else:
        body = fill(endpoint.body if case.body is VALID else case.body, env)
        secrets |= set(values_in(body, endpoint.secret_fields))
        content = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    before = await event_count(env.core)
    response = await env.client(endpoint).request(
        case.method or endpoint.method,
        path,
        content=_chunks(content) if case.streamed and content is not None else content,
        headers=headers,
    )
    return response, secrets, await event_count(env.core) - before


async def assert_refused(env: Env, case: Bad) -> None:
    """Send ``case``: a 4xx problem, no event written, nothing secret repeated, and the
    answer the case expects."""
    response, secrets, written = await send(env, case)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert is_problem(response), response.text[:500]
    assert written == 0, f"{written} event(s) written by a refused request"
    repeated = echoed(response.text, secrets) + echoed(str(response.headers), secrets)
    assert not repeated, f"echoed: {repeated}"
    assert response.status_code in case.status, (response.status_code, response.text[:500])
    if case.codes:
        assert response.json()["code"] in case.codes, response.text[:500]
    if case.bearer_challenge:
        assert response.headers["www-authenticate"].startswith("Bearer")


# Wrong guesses: users of one case's own ---------------------------------------------


@dataclass
class Fresh:
    """A user of one case's own, so the failures it counts disturb no other case."""

    username: str
    account_id: str
    access_token: str
    secret: str = ""  # the TOTP secret: of 2FA when on, else of the pending enrolment
    codes: list[str] = field(default_factory=list)  # codes[0] is spent
    mfa_token: str = ""  # an open login challenge


FreshKind = Literal["password_only", "enrolling", "two_factor", "signing_in"]


async def fresh_user(env: Env, kind: FreshKind) -> Fresh:
    """A new user: password only; enrolling (an enrolment pending its first code);
    two_factor (2FA on, logged in with a recovery code); or signing_in (as two_factor, and
    a login waiting for its second step)."""
    if kind in ("password_only", "enrolling"):
        user = await plain_user(env)
        fresh = Fresh(user.username, user.account_id, user.access_token)
        if kind == "enrolling":
            started = await env.enrol.post("/v1/2fa/enrolment", headers=bearer(user.access_token))
            assert started.status_code == 201, started.text
            fresh.secret = started.json()["secret"]
        return fresh
    user, enrolled = await two_factor_user(env)
    fresh = Fresh(
        user.username, user.account_id, user.access_token, enrolled.secret, enrolled.codes
    )
    if kind == "signing_in":
        fresh.mfa_token = (await password_login(env, user.username))["mfa_token"]
    return fresh


async def events_after(env: Env, position: int) -> list[str]:
    rows = await env.core.pool.fetch(
        "SELECT event_type FROM events WHERE position > $1 ORDER BY position", position
    )
    return [row["event_type"] for row in rows]
