"""Bad input to every enrolment endpoint: always a 4xx problem, no event, no secret echoed.

One database, one topic, the auth and enrolment apps and the outbox relay serve the whole
module: a refused request changes nothing, so the cases cannot disturb each other, and
each case counts the events before and after itself. The auth app runs without its Kafka
consumer, so nothing writes events in the background and the count is exact; the
enrolment app runs with its revocation feed, which the ended and revoked sessions need.
Well-formed but wrong codes are not bad input: they are ordinary failures, counted toward
the lockout, and tested as such at the end (each with a user of its own).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio

from services.auth.main import create_app as auth_app
from services.auth.usecases.account import set_role
from services.auth.usecases.deps import AuthDeps
from services.enrolment.main import create_app as enrolment_app
from shared.app.context import Context
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.kafka import ensure_topics
from shared.security import recovery
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer
from tests.support import servers
from tests.support.apps import client_for, is_problem
from tests.support.clock import Clock
from tests.support.database import admin_sql, event_count
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.seeding import Enrolled, enable_through_domain
from tests.support.settings import settings_for, with_kafka
from tests.support.totp import otp

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "an entirely new passphrase"
# Placeholders a case's path may hold; each is replaced by the module's real value.
TARGET, RESET_TARGET, REQUEST, SUPPORT_A = (
    "<target>",
    "<reset-target>",
    "<request-id>",
    "<support-a>",
)
SQL_OR = "' OR 1=1 --"
SQL_DROP = '"; DROP TABLE events; --'
RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
ZWSP = "\u200b"  # ZERO WIDTH SPACE
ZWJ = "\u200d"  # ZERO WIDTH JOINER
NE = {"$ne": None}
LONG = "x" * 100_000  # over the 64 KiB body limit
TICKET = "SUP-4711"
REASON = "Lost phone and printed codes; identity checked by video call"
GOOD_OTP = {"otp": "123456"}
A_CODE = "7hq2-9x4k-m3rd-0pzv"  # shaped like a recovery code


# The environment --------------------------------------------------------------------


@dataclass
class User:
    account_id: str
    access_token: str
    session_id: str


@dataclass
class Env:
    auth: httpx.AsyncClient
    enrol: httpx.AsyncClient
    core: AuthDeps
    clock: Clock
    users: dict[str, User] = field(default_factory=dict)
    request_id: str = ""
    authorizations: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)  # may appear in no refused response


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


async def plain_user(env: Env, *, role: str | None = None) -> tuple[str, User]:
    """A user without 2FA (so its tokens say acr aal1), optionally with a role."""
    username = fresh_name()
    account_id = await register(env, username)
    if role:
        await set_role(env.core, Context(), username=username, role=role, granted=True)
    token = (await password_login(env, username))["access_token"]
    env.secrets.add(token)
    return username, User(account_id, token, session_of(token))


async def two_factor_user(env: Env, *, role: str | None = None) -> tuple[str, User, Enrolled]:
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
    token: str = session.json()["access_token"]
    env.secrets |= {challenge, token, session.json()["refresh_token"]}
    return username, User(account_id, token, session_of(token)), enrolled


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_tokens(env: Env, victim: User) -> dict[str, str]:
    """Access tokens each wrong in exactly one way, for the victim's account and session."""
    core, now = env.core, env.clock()

    def mint(
        issuer: TokenIssuer,
        *,
        audience: str = core.settings.jwt_audience,
        at: timedelta = timedelta(0),
        acr: str = "aal1",
        roles: tuple[str, ...] = (),
    ) -> str:
        return issuer.issue_access(
            subject=victim.account_id,
            audience=audience,
            session_id=victim.session_id,
            auth_time=now + at,
            amr=["pwd"],
            acr=acr,
            roles=list(roles),
            now=now + at,
        )

    claims = jwt.decode(victim.access_token, options={"verify_signature": False})
    # The same key id as the real ring: only the signature can tell them apart.
    foreign = TokenIssuer(SigningKeys.generate("test-key"), issuer=core.settings.jwt_issuer)
    other_issuer = TokenIssuer(core.settings.signing_keys(), issuer="https://evil.example")
    public = core.settings.signing_keys().public_keys()["test-key"].public_bytes_raw()
    none_header = _b64(orjson.dumps({"alg": "none", "typ": "at+jwt", "kid": "test-key"}))
    header, payload, signature = victim.access_token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "expired": mint(core.issuer, at=-timedelta(hours=2)),
        "not_yet_valid": mint(core.issuer, at=timedelta(hours=2)),
        "foreign_key_same_kid": mint(foreign, acr="aal2", roles=("support",)),
        "alg_none": f"{none_header}.{_b64(orjson.dumps(claims))}.",
        "hs256": jwt.encode(
            claims, public, algorithm="HS256", headers={"kid": "test-key", "typ": "at+jwt"}
        ),
        "wrong_audience": mint(core.issuer, audience="another-service"),
        "wrong_issuer": mint(other_issuer),
        "tampered": f"{header}.{payload}.{flipped}",
    }


async def revoked_and_ended_tokens(env: Env) -> dict[str, str]:
    """A token of a session ended by logout and one revoked by a password change, once
    the enrolment service has learned both from Kafka (polled, never slept for)."""
    username, keeper = await plain_user(env)
    ended = (await password_login(env, username))["access_token"]
    revoked = (await password_login(env, username))["access_token"]
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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    postgres_url: str, template_database: str, kafka_bootstrap: str
) -> AsyncIterator[Env]:
    name = f"twofa_test_{uuid.uuid4().hex[:12]}"
    topic = f"twofa.events.v1.test-{uuid.uuid4().hex[:10]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    await ensure_topics(kafka_bootstrap, [topic, topic + ".dlq"])
    database_url = servers.with_database(postgres_url, name)
    settings = settings_for(
        database_url,
        **with_kafka(kafka_bootstrap, topic),
    )
    # No auth consumer: nothing but the requests themselves may write events.
    quiet_auth = settings.model_copy(update={"kafka_bootstrap_servers": None})
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
                yield await build_env(a, e, core, clock)
    finally:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def build_env(
    auth: httpx.AsyncClient, enrol: httpx.AsyncClient, core: AuthDeps, clock: Clock
) -> Env:
    env = Env(auth, enrol, core, clock)
    env.secrets |= {PASSWORD, NEW_PASSWORD}
    plain_name, env.users["plain"] = await plain_user(env)
    _, env.users["pending"] = await plain_user(env)
    started = await enrol.post(
        "/v1/2fa/enrolment", headers=bearer(env.users["pending"].access_token)
    )
    assert started.status_code == 201, started.text
    env.secrets |= {started.json()["secret"], started.json()["otpauth_uri"]}
    enabled_name, env.users["enabled"], _ = await two_factor_user(env)
    _, env.users["target"], _ = await two_factor_user(env)
    _, env.users["reset_target"], _ = await two_factor_user(env)
    _, env.users["support_a"], _ = await two_factor_user(env, role="support")
    _, env.users["support_b"], _ = await two_factor_user(env, role="support")
    _, env.users["support_aal1"] = await plain_user(env, role="support")

    opened = await enrol.post(
        f"/v1/admin/accounts/{env.users['reset_target'].account_id}/2fa/reset-requests",
        headers=bearer(env.users["support_a"].access_token),
        json={"ticket": TICKET, "reason": REASON},
    )
    assert opened.status_code == 201, opened.text
    env.request_id = opened.json()["request_id"]

    plain = env.users["plain"]
    tokens = await password_login(env, plain_name)
    mfa_token = (await password_login(env, enabled_name))["mfa_token"]
    env.secrets |= {tokens["access_token"], tokens["refresh_token"], mfa_token}
    forged = _forged_tokens(env, plain)
    owner = env.users["reset_target"]
    owner_aal1 = env.core.issuer.issue_access(
        subject=owner.account_id,
        audience=env.core.settings.jwt_audience,
        session_id=owner.session_id,
        auth_time=clock(),
        amr=["pwd"],
        acr="aal1",
        roles=[],
        now=clock(),
    )
    stale = env.core.issuer.issue_access(
        subject=plain.account_id,
        audience=env.core.settings.jwt_audience,
        session_id=plain.session_id,
        auth_time=clock() - timedelta(minutes=10),
        amr=["pwd"],
        acr="aal1",
        roles=[],
        now=clock(),
    )
    sessions = await revoked_and_ended_tokens(env)
    env.secrets |= {*forged.values(), owner_aal1, stale}
    env.authorizations = {
        **{f"as:{name}": bearer(user.access_token) for name, user in env.users.items()},
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
        "mfa_token_as_access": bearer(mfa_token),
        "refresh_token_as_access": bearer(tokens["refresh_token"]),
        **{kind: bearer(token) for kind, token in forged.items()},
        **{kind: bearer(token) for kind, token in sessions.items()},
    }
    return env


# The endpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    user: str  # whose token "valid" means
    body: Any = None  # a valid body, if the endpoint takes one


RESETS = f"/v1/admin/accounts/{RESET_TARGET}/2fa/reset-requests/{REQUEST}"
ENDPOINTS = {
    "start": Endpoint("POST", "/v1/2fa/enrolment", "plain"),
    "qr_svg": Endpoint("GET", "/v1/2fa/enrolment/qr.svg", "pending"),
    "qr_png": Endpoint("GET", "/v1/2fa/enrolment/qr.png", "pending"),
    "confirm": Endpoint("POST", "/v1/2fa/enrolment/confirm", "pending", GOOD_OTP),
    "status": Endpoint("GET", "/v1/2fa", "plain"),
    "regenerate": Endpoint("POST", "/v1/2fa/recovery-codes", "enabled", GOOD_OTP),
    "disable": Endpoint("POST", "/v1/2fa/disable", "enabled", GOOD_OTP),
    "request_reset": Endpoint(
        "POST",
        f"/v1/admin/accounts/{TARGET}/2fa/reset-requests",
        "support_b",
        {"ticket": TICKET, "reason": REASON},
    ),
    "approve": Endpoint("POST", f"{RESETS}/approve", "support_b"),
    "cancel": Endpoint("POST", f"{RESETS}/cancel", "support_b", {"reason": "The user found it"}),
    "account_status": Endpoint("GET", f"/v1/admin/accounts/{TARGET}/2fa", "support_b"),
}
BODY_ENDPOINTS = [name for name, endpoint in ENDPOINTS.items() if endpoint.body is not None]
TRACED = ["start", "confirm", "regenerate", "disable", "request_reset", "approve", "cancel"]


# Cases ------------------------------------------------------------------------------

VALID = object()  # "the endpoint's valid body"


@dataclass(frozen=True)
class Bad:
    """One request that must be refused: what it sends, and the exact answer expected."""

    endpoint: str
    body: Any = VALID
    raw: bytes | None = None
    content_type: str | None = "application/json"
    auth: str = "valid"  # a key of Env.authorizations, or the endpoint's own user
    path: str | None = None  # instead of the endpoint's path
    method: str | None = None  # instead of the endpoint's method
    headers: tuple[tuple[str, str], ...] = ()
    streamed: bool = False  # sent chunked, with no Content-Length
    status: int = 422
    code: str | None = None  # the problem code, where it says more than the status


def bad(
    case_id: str,
    endpoint: str,
    body: Any = VALID,
    status: int = 422,
    **options: Any,
) -> Any:
    """One case as a pytest param."""
    return pytest.param(Bad(endpoint, body, status=status, **options), id=f"{endpoint}-{case_id}")


def raw_json(text: str) -> bytes:
    """JSON text as sent byte for byte, so escapes like \\ud800 reach the parser intact."""
    return text.encode()


# Bodies that are not a JSON object of the endpoint's shape, for every endpoint with one.
# ``VALID`` stands for the endpoint's valid body, serialised.
NOT_JSON: list[tuple[str, Any, str | None, int]] = [
    ("not_json", b"not json", "application/json", 422),
    ("truncated_json", "truncated", "application/json", 422),
    ("empty_body", b"", "application/json", 422),
    ("json_null", b"null", "application/json", 422),
    ("json_array", b"[]", "application/json", 422),
    ("json_array_of_valid_body", "in_array", "application/json", 422),
    ("json_string", b'"123456"', "application/json", 422),
    ("json_number", b"123456", "application/json", 422),
    ("json_true", b"true", "application/json", 422),
    ("nan", "NaN", "application/json", 422),
    ("infinity", "-Infinity", "application/json", 422),
    ("single_quotes", b"{'otp': '123456'}", "application/json", 422),
    ("trailing_comma", b'{"otp": "123456",}', "application/json", 422),
    ("duplicate_key_object_last", "duplicate", "application/json", 422),
    ("invalid_utf8", b'{"otp": "\xff\xfe\xfd"}', "application/json", 400),
    ("deeply_nested", b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
    ("body_over_64k", b'{"otp": "' + LONG.encode() + b'"}', "application/json", 413),
    ("form_encoded", b"otp=123456&reason=x&ticket=SUP-1", "application/x-www-form-urlencoded", 422),
    ("multipart", b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", 422),
    ("valid_body_as_text_plain", VALID, "text/plain", 422),
    ("valid_body_as_xml", VALID, "application/xml", 422),
    ("valid_body_as_octet_stream", VALID, "application/octet-stream", 422),
    ("valid_body_without_content_type", VALID, None, 422),
    ("xml", b"<otp>123456</otp>", "application/xml", 422),
]


def _not_json_body(kind: Any, endpoint: Endpoint) -> bytes:
    valid = json.dumps(endpoint.body).encode()
    if kind is VALID:
        return valid
    if kind == "truncated":
        return valid[:-3]
    if kind == "in_array":
        return b"[" + valid + b"]"
    if kind in ("NaN", "-Infinity"):  # every field a number JSON does not have
        return ("{" + ", ".join(f'"{key}": {kind}' for key in endpoint.body) + "}").encode()
    if kind == "duplicate":  # the last of two equal keys wins: an object, not a string
        first: str = next(iter(endpoint.body))
        return valid[:-1] + b', "' + first.encode() + b'": {"$ne": null}}'
    assert isinstance(kind, bytes)
    return kind


def _not_json_cases() -> list[Any]:
    return [
        bad(
            name,
            endpoint,
            None,
            status,
            raw=_not_json_body(kind, ENDPOINTS[endpoint]),
            content_type=content_type,
        )
        for endpoint in BODY_ENDPOINTS
        for name, kind, content_type, status in NOT_JSON
    ]


# Both otp bodies (confirm, regenerate): {"otp": <1 to 64 characters>}.
def _otp_cases(endpoint: str) -> list[Any]:
    return [
        bad("missing_otp", endpoint, {}),
        bad("otp_number", endpoint, {"otp": 123456}),
        bad("otp_float", endpoint, {"otp": 123456.0}),
        bad("otp_array", endpoint, {"otp": ["123456"]}),
        bad("otp_object_ne", endpoint, {"otp": NE}),
        bad("otp_object_gt", endpoint, {"otp": {"$gt": ""}}),
        bad("otp_null", endpoint, {"otp": None}),
        bad("otp_bool", endpoint, {"otp": True}),
        bad("otp_empty", endpoint, {"otp": ""}),
        bad("otp_65", endpoint, {"otp": "1" * 65}),
        bad("otp_1000", endpoint, {"otp": "9" * 1000}),
        bad("otp_100k", endpoint, {"otp": LONG}, 413),
        bad("otp_100k_streamed", endpoint, {"otp": LONG}, 413, streamed=True),
        bad("otp_nul", endpoint, {"otp": "123\x00456"}),
        bad("otp_only_nul", endpoint, {"otp": "\x00"}),
        bad("otp_lone_surrogate", endpoint, raw=raw_json('{"otp": "12345\\ud800"}')),
        bad("otp_lone_low_surrogate", endpoint, raw=raw_json('{"otp": "\\udfff"}')),
        bad("recovery_code_instead", endpoint, {"recovery_code": A_CODE}),
        bad("otp_and_recovery_code", endpoint, {"otp": "123456", "recovery_code": A_CODE}),
        bad("extra_secret", endpoint, {"otp": "123456", "secret": "JBSWY3DPEHPK3PXP"}),
        bad("extra_account_id", endpoint, {"otp": "123456", "account_id": str(uuid.uuid4())}),
        bad("extra_time_step", endpoint, {"otp": "123456", "time_step": 1}),
        bad("extra_sql_key", endpoint, {"otp": "123456", SQL_OR: SQL_DROP}),
        bad("key_with_nul", endpoint, {"otp\x00": "123456"}),
        bad("key_case", endpoint, {"OTP": "123456"}),
    ]


CONFIRM = _otp_cases("confirm")
REGENERATE = _otp_cases("regenerate")

# POST /v1/2fa/disable: exactly one of otp and recovery_code.
DISABLE = [
    bad("missing_both", "disable", {}),
    bad("both_otp_and_recovery_code", "disable", {"otp": "123456", "recovery_code": A_CODE}),
    bad("both_null", "disable", {"otp": None, "recovery_code": None}),
    bad("otp_null_only", "disable", {"otp": None}),
    bad("recovery_code_null_only", "disable", {"recovery_code": None}),
    bad("otp_number", "disable", {"otp": 123456}),
    bad("otp_array", "disable", {"otp": ["123456"]}),
    bad("otp_object_ne", "disable", {"otp": NE}),
    bad("otp_bool", "disable", {"otp": False}),
    bad("otp_empty", "disable", {"otp": ""}),
    bad("otp_65", "disable", {"otp": "1" * 65}),
    bad("otp_100k", "disable", {"otp": LONG}, 413),
    bad("otp_nul", "disable", {"otp": "123456\x00"}),
    bad("otp_lone_surrogate", "disable", raw=raw_json('{"otp": "\\ud800123456"}')),
    bad("recovery_code_number", "disable", {"recovery_code": 1234567890123456}),
    bad("recovery_code_array", "disable", {"recovery_code": [A_CODE]}),
    bad("recovery_code_object_ne", "disable", {"recovery_code": NE}),
    bad("recovery_code_bool", "disable", {"recovery_code": True}),
    bad("recovery_code_empty", "disable", {"recovery_code": ""}),
    bad("recovery_code_65", "disable", {"recovery_code": "a" * 65}),
    bad("recovery_code_100k", "disable", {"recovery_code": LONG}, 413),
    bad("recovery_code_nul", "disable", {"recovery_code": A_CODE + "\x00"}),
    bad(
        "recovery_code_lone_surrogate",
        "disable",
        raw=raw_json('{"recovery_code": "7hq2-9x4k-m3rd-\\udfff"}'),
    ),
    bad("empty_otp_and_recovery_code", "disable", {"otp": "", "recovery_code": A_CODE}),
    bad("extra_method", "disable", {"otp": "123456", "method": "admin"}),
    bad("extra_session_id", "disable", {"otp": "123456", "session_id": uuid.uuid4().hex}),
    bad("extra_force", "disable", {"recovery_code": A_CODE, "force": True}),
]

# POST .../reset-requests: {"ticket": ^[\w.:/#-]{1,100}$, "reason": 1 to 500 characters}.
REQUEST_RESET = [
    bad("missing_everything", "request_reset", {}),
    bad("missing_ticket", "request_reset", {"reason": REASON}),
    bad("missing_reason", "request_reset", {"ticket": TICKET}),
    bad("ticket_number", "request_reset", {"ticket": 4711, "reason": REASON}),
    bad("ticket_array", "request_reset", {"ticket": [TICKET], "reason": REASON}),
    bad("ticket_object_ne", "request_reset", {"ticket": NE, "reason": REASON}),
    bad("ticket_null", "request_reset", {"ticket": None, "reason": REASON}),
    bad("ticket_bool", "request_reset", {"ticket": True, "reason": REASON}),
    bad("ticket_empty", "request_reset", {"ticket": "", "reason": REASON}),
    bad("ticket_101", "request_reset", {"ticket": "T" * 101, "reason": REASON}),
    bad("ticket_100k", "request_reset", {"ticket": LONG, "reason": REASON}, 413),
    bad("ticket_space", "request_reset", {"ticket": "SUP 4711", "reason": REASON}),
    bad("ticket_newline", "request_reset", {"ticket": "SUP-4711\n", "reason": REASON}),
    bad("ticket_tab", "request_reset", {"ticket": "SUP-\t4711", "reason": REASON}),
    bad("ticket_sql_or", "request_reset", {"ticket": SQL_OR, "reason": REASON}),
    bad("ticket_sql_drop", "request_reset", {"ticket": SQL_DROP, "reason": REASON}),
    bad("ticket_sql_quote_only", "request_reset", {"ticket": "SUP-4711'", "reason": REASON}),
    bad("ticket_json_text", "request_reset", {"ticket": '{"$ne":null}', "reason": REASON}),
    bad("ticket_html", "request_reset", {"ticket": "<script>x</script>", "reason": REASON}),
    bad("ticket_rtl", "request_reset", {"ticket": f"SUP-{RTL}1174", "reason": REASON}),
    bad("ticket_zwsp", "request_reset", {"ticket": f"SUP-{ZWSP}4711", "reason": REASON}),
    bad("ticket_emoji", "request_reset", {"ticket": "SUP-🔐", "reason": REASON}),
    bad("ticket_nul", "request_reset", {"ticket": "SUP-\x004711", "reason": REASON}),
    bad(
        "ticket_lone_surrogate",
        "request_reset",
        raw=raw_json(f'{{"ticket": "SUP-\\ud800", "reason": "{REASON}"}}'),
    ),
    bad("reason_number", "request_reset", {"ticket": TICKET, "reason": 42}),
    bad("reason_array", "request_reset", {"ticket": TICKET, "reason": [REASON]}),
    bad("reason_object_ne", "request_reset", {"ticket": TICKET, "reason": NE}),
    bad("reason_null", "request_reset", {"ticket": TICKET, "reason": None}),
    bad("reason_bool", "request_reset", {"ticket": TICKET, "reason": False}),
    bad("reason_empty", "request_reset", {"ticket": TICKET, "reason": ""}),
    bad("reason_501", "request_reset", {"ticket": TICKET, "reason": "r" * 501}),
    bad("reason_100k", "request_reset", {"ticket": TICKET, "reason": LONG}, 413),
    bad(
        "reason_100k_streamed",
        "request_reset",
        {"ticket": TICKET, "reason": LONG},
        413,
        streamed=True,
    ),
    bad(
        "reason_nul",
        "request_reset",
        {"ticket": TICKET, "reason": "phone lost\x00"},
    ),
    bad(
        "reason_lone_surrogate",
        "request_reset",
        raw=raw_json(f'{{"ticket": "{TICKET}", "reason": "lost \\ud800 phone"}}'),
    ),
    bad(
        "extra_requested_by",
        "request_reset",
        {"ticket": TICKET, "reason": REASON, "requested_by": str(uuid.uuid4())},
    ),
    bad(
        "extra_approved_by",
        "request_reset",
        {"ticket": TICKET, "reason": REASON, "approved_by": str(uuid.uuid4())},
    ),
    bad(
        "extra_effective_at",
        "request_reset",
        {"ticket": TICKET, "reason": REASON, "effective_at": "2020-01-01T00:00:00Z"},
    ),
    bad(
        "extra_request_id", "request_reset", {"ticket": TICKET, "reason": REASON, "request_id": "0"}
    ),
]

# POST .../cancel: {"reason": 1 to 500 characters}.
CANCEL = [
    bad("missing_reason", "cancel", {}),
    bad("reason_number", "cancel", {"reason": 42}),
    bad("reason_array", "cancel", {"reason": ["x"]}),
    bad("reason_object_ne", "cancel", {"reason": NE}),
    bad("reason_null", "cancel", {"reason": None}),
    bad("reason_bool", "cancel", {"reason": True}),
    bad("reason_empty", "cancel", {"reason": ""}),
    bad("reason_501", "cancel", {"reason": "r" * 501}),
    bad("reason_100k", "cancel", {"reason": LONG}, 413),
    bad("reason_100k_streamed", "cancel", {"reason": LONG}, 413, streamed=True),
    bad("reason_nul", "cancel", {"reason": "found it\x00"}),
    bad("reason_lone_surrogate", "cancel", raw=raw_json('{"reason": "\\udbff\\udbff"}')),
    bad("extra_cancelled_by", "cancel", {"reason": "found it", "cancelled_by": "account-owner"}),
    bad("extra_request_id", "cancel", {"reason": "found it", "request_id": uuid.uuid4().hex}),
]

# Malformed path parameters (percent-encoded where a URL cannot hold them raw).
UUID = "3f6d1a52-93a4-4c4e-b3a4-7d0f35b7c1e2"
ACCOUNT_IDS: list[tuple[str, str, int]] = [
    ("not_a_uuid", "not-a-uuid", 422),
    ("uuid_then_sql", f"{UUID}' OR 1=1 --", 422),
    ("sql_only", "' OR '1'='1", 422),
    ("sql_drop", "x'; DROP TABLE events; --", 422),
    ("segment_10k", "a" * 10_240, 422),
    ("uuid_37", UUID + "0", 422),
    ("uuid_35", UUID[:-1], 422),
    ("uuid_in_braces", "{" + UUID + "}", 422),
    ("urn_uuid", f"urn:uuid:{UUID}", 422),
    ("nul_inside", UUID[:-1] + "%00", 422),
    ("fullwidth_digit", UUID[:-1] + "\uff11", 422),
    ("rtl_inside", UUID[:-1] + RTL, 422),
    ("json_object", '{"$ne":null}', 422),
    ("encoded_slash", UUID[:18] + "/" + UUID[19:], 404),
    ("36_dashes", "-" * 36, 422),
    ("36_hex_without_dashes", "abcdef0123" * 3 + "abcdef", 422),
]
REQUEST_IDS: list[tuple[str, str, int]] = [
    ("31_hex", "a" * 31, 422),
    ("33_hex", "a" * 33, 422),
    ("upper_hex", "A" * 32, 422),
    ("uuid_with_dashes", UUID, 422),
    ("32_non_hex", "g" * 32, 422),
    ("sql", "' OR 1=1 --" + "a" * 21, 422),
    ("segment_10k", "a" * 10_240, 422),
    ("nul_inside", "a" * 31 + "%00", 422),
    ("fullwidth_digits", "\uff10" * 32, 422),
    ("arabic_indic_digits", "\u0660" * 32, 422),
    ("hex_then_newline", "a" * 32 + "%0A", 422),
    ("unknown_but_well_formed", "0" * 32, 409),
]
QR_KINDS: list[tuple[str, str, int]] = [
    ("gif", "gif", 422),
    ("jpeg", "jpeg", 422),
    ("upper_svg", "SVG", 422),
    ("svg_dot_png", "svg.png", 422),
    ("svg_then_nul", "svg%00", 422),
    ("svg_then_space", "svg ", 422),
    ("sql", "svg' OR 1=1 --", 422),
    ("kind_10k", "s" * 10_240, 422),
    ("empty_kind", "", 404),
]


def _path_cases() -> list[Any]:
    cases = []
    for name, value, status in ACCOUNT_IDS:
        for endpoint in ("request_reset", "approve", "cancel", "account_status"):
            path = ENDPOINTS[endpoint].path
            path = path.replace(TARGET, value).replace(RESET_TARGET, value)
            cases.append(bad(f"account_{name}", endpoint, status=status, path=path))
    for name, value, status in REQUEST_IDS:
        for endpoint in ("approve", "cancel"):
            path = ENDPOINTS[endpoint].path.replace(REQUEST, value)
            cases.append(bad(f"request_{name}", endpoint, status=status, path=path))
    for name, value, status in QR_KINDS:
        cases.append(
            bad(f"qr_{name}", "qr_svg", status=status, path=f"/v1/2fa/enrolment/qr.{value}")
        )
    return cases


# Bearer tokens, each wrong in one way, on every endpoint with a valid request otherwise.
TOKEN_KINDS: dict[str, str] = {
    "no_token": "missing_token",
    "empty_bearer": "missing_token",
    "bearer_without_space": "missing_token",
    "basic_scheme": "missing_token",
    "valid_token_wrong_scheme": "missing_token",
    "garbage": "invalid_token",
    "three_garbage_segments": "invalid_token",
    "token_and_trailing_word": "invalid_token",
    "oversized": "invalid_token",
    "tampered": "invalid_token",
    "expired": "invalid_token",
    "not_yet_valid": "invalid_token",
    "foreign_key_same_kid": "invalid_token",
    "alg_none": "invalid_token",
    "hs256": "invalid_token",
    "wrong_audience": "invalid_token",
    "wrong_issuer": "invalid_token",
    "mfa_token_as_access": "invalid_token",
    "refresh_token_as_access": "invalid_token",
    "ended_session": "invalid_token",
    "revoked_session": "invalid_token",
}

# Who may do what: support endpoints, the owner's cancel, and refusals by state.
ROLES = [
    bad("normal_user", "request_reset", status=403, auth="as:enabled", code="forbidden"),
    bad(
        "support_at_aal1", "request_reset", status=403, auth="as:support_aal1", code="aal2_required"
    ),
    bad("target_itself", "request_reset", status=403, auth="as:target", code="forbidden"),
    bad("normal_user", "approve", status=403, auth="as:enabled", code="forbidden"),
    bad("support_at_aal1", "approve", status=403, auth="as:support_aal1", code="aal2_required"),
    bad("account_owner", "approve", status=403, auth="as:reset_target", code="forbidden"),
    bad("normal_user", "cancel", status=403, auth="as:enabled", code="forbidden"),
    bad("support_at_aal1", "cancel", status=403, auth="as:support_aal1", code="aal2_required"),
    # The owner has 2FA on: a password-only token of theirs is refused before anything.
    bad(
        "owner_at_aal1",
        "cancel",
        status=401,
        auth="owner_aal1",
        code="insufficient_user_authentication",
    ),
    bad("normal_user", "account_status", status=403, auth="as:enabled", code="forbidden"),
    bad(
        "support_at_aal1",
        "account_status",
        status=403,
        auth="as:support_aal1",
        code="aal2_required",
    ),
    bad("another_account", "account_status", status=403, auth="as:target", code="forbidden"),
]
STATE = [
    bad("stale_login", "start", status=401, auth="stale_login", code="reauthentication_required"),
    bad("already_enabled", "start", status=409, auth="as:enabled", code="twofa_already_enabled"),
    bad("nothing_pending", "qr_svg", status=409, auth="as:plain", code="no_pending_enrolment"),
    bad("nothing_pending", "qr_png", status=409, auth="as:plain", code="no_pending_enrolment"),
    bad("already_enabled", "qr_png", status=409, auth="as:enabled", code="twofa_already_enabled"),
    bad("nothing_pending", "confirm", status=409, auth="as:plain", code="no_pending_enrolment"),
    bad("already_enabled", "confirm", status=409, auth="as:enabled", code="twofa_already_enabled"),
    bad("twofa_off", "regenerate", status=409, auth="as:plain", code="twofa_not_enabled"),
    bad("only_pending", "regenerate", status=409, auth="as:pending", code="twofa_not_enabled"),
    bad("twofa_off", "disable", status=409, auth="as:plain", code="twofa_not_enabled"),
    bad(
        "twofa_off_recovery_code",
        "disable",
        {"recovery_code": A_CODE},
        409,
        auth="as:plain",
        code="twofa_not_enabled",
    ),
    bad(
        "own_account",
        "request_reset",
        status=409,
        path=f"/v1/admin/accounts/{SUPPORT_A}/2fa/reset-requests",
        auth="as:support_a",
        code="not_allowed",
    ),
    bad(
        "one_already_pending",
        "request_reset",
        status=409,
        path=f"/v1/admin/accounts/{RESET_TARGET}/2fa/reset-requests",
        code="not_allowed",
    ),
    bad(
        "twofa_off",
        "request_reset",
        status=409,
        path="/v1/admin/accounts/<plain>/2fa/reset-requests",
        code="twofa_not_enabled",
    ),
    bad("by_its_requester", "approve", status=409, auth="as:support_a", code="not_allowed"),
    bad(
        "of_another_account",
        "approve",
        status=409,
        path=f"/v1/admin/accounts/{TARGET}/2fa/reset-requests/{REQUEST}/approve",
        code="not_allowed",
    ),
    bad(
        "of_another_account",
        "cancel",
        status=409,
        path=f"/v1/admin/accounts/{TARGET}/2fa/reset-requests/{REQUEST}/cancel",
        code="not_allowed",
    ),
]

WRONG_METHODS = [
    bad("get", "start", status=405, method="GET"),
    bad("delete", "start", status=405, method="DELETE"),
    bad("post", "qr_svg", status=405, method="POST"),
    bad("put", "qr_png", status=405, method="PUT"),
    bad("get", "confirm", status=405, method="GET"),
    bad("post", "status", status=405, method="POST"),
    bad("delete", "status", status=405, method="DELETE"),
    bad("get", "regenerate", status=405, method="GET"),
    bad("put", "disable", status=405, method="PUT"),
    bad("get", "request_reset", status=405, method="GET"),
    bad("get", "approve", status=405, method="GET"),
    bad("delete", "cancel", status=405, method="DELETE"),
    bad("post", "account_status", status=405, method="POST"),
    bad("patch", "account_status", status=405, method="PATCH"),
]


def _oversized_cases() -> list[Any]:
    """100 KB to every endpoint, declared in Content-Length: refused before anything."""
    return [bad("body_100k", name, None, 413, raw=LONG.encode()) for name in ENDPOINTS]


def _request_id_header_cases() -> list[Any]:
    return [
        bad("x_request_id_101", name, status=422, headers=(("X-Request-Id", "r" * 101),))
        for name in TRACED
    ]


# Running a case ---------------------------------------------------------------------


def _fill(value: Any, env: Env) -> Any:
    """``value`` with every placeholder replaced by the module's real value."""
    if isinstance(value, str):
        for marker, real in (
            (TARGET, env.users["target"].account_id),
            (RESET_TARGET, env.users["reset_target"].account_id),
            (REQUEST, env.request_id),
            (SUPPORT_A, env.users["support_a"].account_id),
            ("<plain>", env.users["plain"].account_id),
        ):
            value = value.replace(marker, real)
        return value
    if isinstance(value, dict):
        return {_fill(k, env): _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(item, env) for item in value]
    return value


def _strings_in(value: Any) -> Iterator[str]:
    """Every string value (not key: a problem may name a field it refuses) in ``value``."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings_in(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)
    elif isinstance(value, str):
        yield value


def _echoed(text: str, secrets: set[str]) -> list[str]:
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
    endpoint = ENDPOINTS[case.endpoint]
    auth = f"as:{endpoint.user}" if case.auth == "valid" else case.auth
    headers = dict(env.authorizations[auth])
    headers.update(case.headers)
    secrets = set(env.secrets)
    secrets |= {value.split(" ", 1)[-1] for value in env.authorizations[auth].values()}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    path = _fill(case.path or endpoint.path, env)
    if case.path is not None:  # a bad path segment must not come back either
        secrets |= {part for part in path.split("/") if part not in endpoint.path}
    content: bytes | None
    if case.raw is not None:
        content = case.raw
    elif case.body is None or (case.body is VALID and endpoint.body is None):
        content = None
    else:
        body = _fill(endpoint.body if case.body is VALID else case.body, env)
        secrets |= set(_strings_in(body))
        content = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    before = await event_count(env.core)
    response = await env.enrol.request(
        case.method or endpoint.method,
        path,
        content=_chunks(content) if case.streamed and content is not None else content,
        headers=headers,
    )
    return response, secrets, await event_count(env.core) - before


def assert_refused(case: Bad, response: httpx.Response, secrets: set[str], written: int) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert is_problem(response), response.text[:500]
    assert written == 0, f"{written} event(s) written by a refused request"
    echoed = _echoed(response.text, secrets) + _echoed(str(response.headers), secrets)
    assert not echoed, f"echoed: {echoed}"
    assert response.status_code == case.status, (response.status_code, response.text[:500])
    if case.code is not None:
        assert response.json()["code"] == case.code, response.text[:500]


# Tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _not_json_cases())
async def test_a_body_that_is_not_a_json_object_of_the_right_shape_is_refused(
    env: Env, case: Bad
) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", _oversized_cases())
async def test_a_100k_body_is_refused_by_every_endpoint(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)
    assert response.json()["code"] == "body_too_large"


@pytest.mark.parametrize("case", CONFIRM)
async def test_bad_confirm_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", REGENERATE)
async def test_bad_recovery_code_regeneration_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", DISABLE)
async def test_bad_disable_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", REQUEST_RESET)
async def test_bad_reset_request_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", CANCEL)
async def test_bad_reset_cancellation_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", _path_cases())
async def test_a_malformed_path_parameter_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("kind", list(TOKEN_KINDS))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_a_bad_bearer_token_is_refused(env: Env, endpoint: str, kind: str) -> None:
    case = Bad(endpoint, auth=kind, status=401, code=TOKEN_KINDS[kind])
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("case", ROLES)
async def test_support_endpoints_need_the_role_and_the_second_factor(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", STATE)
async def test_a_request_the_state_forbids_is_refused_and_writes_nothing(
    env: Env, case: Bad
) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", _request_id_header_cases())
async def test_an_over_long_request_id_header_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


@pytest.mark.parametrize("case", WRONG_METHODS)
async def test_a_wrong_method_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, case)
    assert_refused(case, response, secrets, written)


async def test_the_refused_requests_left_every_account_as_it_was(env: Env) -> None:
    """After all the above: the pending enrolment still pends, 2FA is still on, the reset
    still waits for approval (module order runs this after the cases)."""
    users = env.users
    pending = await env.enrol.get("/v1/2fa", headers=bearer(users["pending"].access_token))
    assert pending.json()["pending_enrolment_expires_at"] is not None
    enabled = await env.enrol.get("/v1/2fa", headers=bearer(users["enabled"].access_token))
    assert enabled.json()["enabled"] is True and enabled.json()["recovery_codes_left"] == 5
    view = await env.enrol.get(
        f"/v1/admin/accounts/{users['reset_target'].account_id}/2fa",
        headers=bearer(users["support_b"].access_token),
    )
    reset = view.json()["reset"]
    assert reset["request_id"] == env.request_id and reset["approved_by"] is None
    target = await env.enrol.get(
        f"/v1/admin/accounts/{users['target'].account_id}/2fa",
        headers=bearer(users["support_b"].access_token),
    )
    assert target.json()["enabled"] is True and target.json()["reset"] is None


# Well-formed but wrong codes: refused, and counted like any other wrong guess ---------


@dataclass
class Fresh:
    """A user of one case's own, so the failures it counts disturb no other case."""

    account_id: str
    access_token: str
    secret: str
    codes: list[str] = field(default_factory=list)  # codes[0] is spent


async def fresh_user(env: Env, *, two_factor: bool) -> Fresh:
    """2FA on (logged in with a recovery code), or an enrolment pending its first code."""
    if two_factor:
        _, user, enrolled = await two_factor_user(env)
        return Fresh(user.account_id, user.access_token, enrolled.secret, enrolled.codes)
    _, user = await plain_user(env)
    started = await env.enrol.post("/v1/2fa/enrolment", headers=bearer(user.access_token))
    assert started.status_code == 201, started.text
    return Fresh(user.account_id, user.access_token, started.json()["secret"])


def wrong_code(secret: str, now: datetime) -> str:
    """Six digits that are not the code of any step the window accepts."""
    live = {otp(secret, now + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "999999") if c not in live)


ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


def fullwidth_code(code: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in code)


def odd(case_id: str, endpoint: str, body: Any, *, two_factor: bool = True) -> Any:
    return pytest.param(endpoint, body, two_factor, id=f"{endpoint}-{case_id}")


ODD_CODES = [
    odd(
        "wrong_six_digits",
        "confirm",
        lambda u, now: {"otp": wrong_code(u.secret, now)},
        two_factor=False,
    ),
    odd("sql_or", "confirm", lambda u, now: {"otp": SQL_OR}, two_factor=False),
    odd(
        "right_code_in_fullwidth_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now).translate(FULLWIDTH)},
        two_factor=False,
    ),
    odd(
        "right_code_in_arabic_indic_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now).translate(ARABIC_INDIC)},
        two_factor=False,
    ),
    odd(
        "right_code_after_rtl_override",
        "confirm",
        lambda u, now: {"otp": RTL + otp(u.secret, now)},
        two_factor=False,
    ),
    odd(
        "right_code_with_zero_width_space",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now)[:3] + ZWSP + otp(u.secret, now)[3:]},
        two_factor=False,
    ),
    odd(
        "seven_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now) + "0"},
        two_factor=False,
    ),
    odd("wrong_six_digits", "regenerate", lambda u, now: {"otp": wrong_code(u.secret, now)}),
    odd("sql_drop", "regenerate", lambda u, now: {"otp": SQL_DROP}),
    odd("emoji", "regenerate", lambda u, now: {"otp": "🔐🔑🔐🔑🔐🔑"}),
    odd(
        "right_code_in_fullwidth_digits",
        "regenerate",
        lambda u, now: {"otp": otp(u.secret, now).translate(FULLWIDTH)},
    ),
    odd("wrong_six_digits", "disable", lambda u, now: {"otp": wrong_code(u.secret, now)}),
    odd("otp_sql_or", "disable", lambda u, now: {"otp": SQL_OR}),
    odd(
        "wrong_recovery_code", "disable", lambda u, now: {"recovery_code": recovery.new_codes(1)[0]}
    ),
    odd("spent_recovery_code", "disable", lambda u, now: {"recovery_code": u.codes[0]}),
    odd("recovery_code_sql_drop", "disable", lambda u, now: {"recovery_code": SQL_DROP}),
    odd(
        "right_recovery_code_with_zero_width_joiner",
        "disable",
        lambda u, now: {"recovery_code": ZWJ + u.codes[1]},
    ),
    odd(
        "right_recovery_code_in_fullwidth",
        "disable",
        lambda u, now: {"recovery_code": fullwidth_code(u.codes[1])},
    ),
    odd(
        "right_recovery_code_after_rtl_override",
        "disable",
        lambda u, now: {"recovery_code": RTL + u.codes[1]},
    ),
]


async def events_after(env: Env, position: int) -> list[str]:
    rows = await env.core.pool.fetch(
        "SELECT event_type FROM events WHERE position > $1 ORDER BY position", position
    )
    return [row["event_type"] for row in rows]


@pytest.mark.parametrize(("endpoint", "body", "two_factor"), ODD_CODES)
async def test_well_formed_but_wrong_codes_are_ordinary_failures(
    env: Env, endpoint: str, body: Any, two_factor: bool
) -> None:
    """Not bad input but a wrong guess: 401, and exactly the failure the guess must count."""
    user = await fresh_user(env, two_factor=two_factor)
    sent = body(user, env.clock())
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.enrol.post(
        ENDPOINTS[endpoint].path, json=sent, headers=bearer(user.access_token)
    )
    assert response.status_code == 401, response.text
    assert is_problem(response) and response.json()["code"] == "invalid_code"
    assert response.json()["attempts_left"] == 4
    assert await events_after(env, before) == ["twofa.otp_failed"]
    failure = await env.core.pool.fetchrow(
        "SELECT stream_id, data FROM events WHERE position > $1", before
    )
    assert failure["stream_id"] == f"twofactor-{user.account_id}"
    data = json.loads(failure["data"]) if isinstance(failure["data"], str) else failure["data"]
    purpose = {"confirm": "enrolment", "regenerate": "regenerate_codes", "disable": "disable"}
    assert data["purpose"] == purpose[endpoint] and data["consecutive_failures"] == 1
    secrets = {user.access_token, user.secret, *user.codes, *_strings_in(sent)}
    assert not _echoed(response.text, secrets), "a submitted code or a secret is echoed"
    status = (await env.enrol.get("/v1/2fa", headers=bearer(user.access_token))).json()
    assert status["enabled"] is two_factor  # the failure changed nothing else


async def test_the_fifth_wrong_code_locks_and_then_even_the_right_one_is_refused(
    env: Env,
) -> None:
    user = await fresh_user(env, two_factor=True)
    now = env.clock()
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    answers = [
        await env.enrol.post(
            "/v1/2fa/disable",
            json={"otp": wrong_code(user.secret, now)},
            headers=bearer(user.access_token),
        )
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 423]
    assert [a.json()["attempts_left"] for a in answers[:4]] == [4, 3, 2, 1]
    locked = answers[-1]
    assert is_problem(locked) and locked.json()["code"] == "second_factor_locked"
    assert int(locked.headers["retry-after"]) == 15 * 60
    assert await events_after(env, before) == ["twofa.otp_failed"] * 5 + ["twofa.locked"]

    position = await env.core.pool.fetchval("SELECT max(position) FROM events")
    right = await env.enrol.post(
        "/v1/2fa/disable", json={"otp": otp(user.secret, now)}, headers=bearer(user.access_token)
    )
    assert right.status_code == 423 and is_problem(right)
    assert await events_after(env, position) == []  # a locked factor counts nothing more
    status = (await env.enrol.get("/v1/2fa", headers=bearer(user.access_token))).json()
    assert status["enabled"] is True
