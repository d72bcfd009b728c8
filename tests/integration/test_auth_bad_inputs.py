"""Bad input to every auth endpoint: always a 4xx problem, no event, no secret echoed.

One app, one database and a handful of users serve the whole module (a refused request
changes nothing, so the cases cannot disturb each other); each case counts the events
before and after itself.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio

from services.auth.main import create_app
from services.auth.usecases.deps import AuthDeps
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer
from tests.support import servers
from tests.support.apps import client_for, is_problem
from tests.support.clock import Clock
from tests.support.database import admin_sql, event_count
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for
from tests.support.totp import otp

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "an entirely new passphrase"
# Placeholders a case's body may hold; each is replaced by the module's real value.
USER, USER_UPPER, NEW_USER, MFA, REFRESH, ACCOUNT, SESSION = (
    "<user>",
    "<user-in-upper-case>",
    "<new-user>",
    "<mfa-token>",
    "<refresh-token>",
    "<account-id>",
    "<session-id>",
)
SQL_OR = "' OR 1=1 --"
SQL_DROP = '"; DROP TABLE events; --'
RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
ZWSP = "\u200b"  # ZERO WIDTH SPACE
ZWJ = "\u200d"  # ZERO WIDTH JOINER
NE = {"$ne": None}
LONG = "x" * 100_000  # over the 64 KiB body limit
SECRET_FIELDS = {"password", "current_password", "new_password", "otp", "recovery_code"}
TOKEN_FIELDS = {"mfa_token", "refresh_token", "device_token"}

# The environment --------------------------------------------------------------------


@dataclass
class Env:
    client: httpx.AsyncClient
    core: AuthDeps
    clock: Clock
    username: str  # password only
    account_id: str
    session_id: str
    refresh_token: str
    mfa_username: str  # two-factor on, with one open login challenge
    mfa_token: str
    authorizations: dict[str, dict[str, str]] = field(default_factory=dict)


def fresh_name() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def register(client: httpx.AsyncClient, username: str) -> str:
    response = await client.post(
        "/v1/accounts",
        json={"username": username, "email": f"{username}@example.org", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    account_id: str = response.json()["account_id"]
    return account_id


async def password_login(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    response = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_tokens(env: Env, access: str) -> dict[str, str]:
    """Access tokens each wrong in exactly one way, for the same account and session."""
    core, now = env.core, env.clock()
    audience = core.settings.jwt_audience

    def mint(
        issuer: TokenIssuer,
        *,
        audience: str = audience,
        at: timedelta = timedelta(0),
        subject: str = env.account_id,
        session_id: str = env.session_id,
    ) -> str:
        return issuer.issue_access(
            subject=subject,
            audience=audience,
            session_id=session_id,
            auth_time=now + at,
            amr=["pwd"],
            acr="aal1",
            roles=[],
            now=now + at,
        )

    claims = jwt.decode(access, options={"verify_signature": False})
    foreign = TokenIssuer(SigningKeys.generate("test-key"), issuer=core.settings.jwt_issuer)
    other_issuer = TokenIssuer(core.settings.signing_keys(), issuer="https://evil.example")
    public = core.settings.signing_keys().public_keys()["test-key"].public_bytes_raw()
    none_header = _b64(orjson.dumps({"alg": "none", "typ": "at+jwt", "kid": "test-key"}))
    header, payload, signature = access.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "expired": mint(core.issuer, at=-timedelta(hours=2)),
        "foreign_key": mint(foreign),
        "alg_none": f"{none_header}.{_b64(orjson.dumps(claims))}.",
        "hs256": jwt.encode(
            claims, public, algorithm="HS256", headers={"kid": "test-key", "typ": "at+jwt"}
        ),
        "wrong_audience": mint(core.issuer, audience="another-service"),
        "wrong_issuer": mint(other_issuer),
        "tampered": f"{header}.{payload}.{flipped}",
        "unknown_account": mint(
            core.issuer, subject=str(uuid.uuid4()), session_id=uuid.uuid4().hex
        ),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(postgres_url: str, template_database: str) -> AsyncIterator[Env]:
    name = f"twofa_test_{uuid.uuid4().hex[:12]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    clock = Clock()
    app = create_app(settings_for(servers.with_database(postgres_url, name)), clock=clock)
    try:
        async with client_for(app, raise_app_exceptions=False) as client:
            core: AuthDeps = app.state.deps
            username = fresh_name()
            account_id = await register(client, username)
            tokens = await password_login(client, username)
            access = tokens["access_token"]
            ended = (await password_login(client, username))["access_token"]
            logout = await client.post("/v1/logout", headers={"Authorization": f"Bearer {ended}"})
            assert logout.status_code == 204
            mfa_username = fresh_name()
            mfa_account = await register(client, mfa_username)
            await enable_through_domain(core, mfa_account, clock())
            mfa_token = (await password_login(client, mfa_username))["mfa_token"]
            session_id = jwt.decode(access, options={"verify_signature": False})["sid"]
            built = Env(
                client,
                core,
                clock,
                username,
                account_id,
                session_id,
                tokens["refresh_token"],
                mfa_username,
                mfa_token,
            )
            forged = _forged_tokens(built, access)
            built.authorizations = {
                "valid": {"Authorization": f"Bearer {access}"},
                "no_token": {},
                "empty_bearer": {"Authorization": "Bearer "},
                "garbage": {"Authorization": "Bearer garbage-garbage-garbage"},
                "three_garbage_segments": {"Authorization": "Bearer aaaa.bbbb.cccc"},
                "basic_scheme": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
                "valid_token_wrong_scheme": {"Authorization": f"Token {access}"},
                "token_and_trailing_word": {"Authorization": f"Bearer {access} extra"},
                "oversized": {"Authorization": "Bearer " + "a" * 9000},
                "mfa_token_as_access": {"Authorization": f"Bearer {mfa_token}"},
                "refresh_token_as_access": {"Authorization": f"Bearer {tokens['refresh_token']}"},
                "ended_session": {"Authorization": f"Bearer {ended}"},
                **{kind: {"Authorization": f"Bearer {token}"} for kind, token in forged.items()},
            }
            yield built
    finally:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One request that must be refused: its body (JSON, or raw bytes) and its token."""

    body: Any = None
    raw: bytes | None = None
    content_type: str | None = "application/json"
    auth: str = "valid"  # a key of Env.authorizations
    status: tuple[int, ...] = (422,)


def bad(
    case_id: str,
    body: Any = None,
    status: int | tuple[int, ...] = 422,
    *,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    auth: str = "valid",
) -> Any:
    statuses = status if isinstance(status, tuple) else (status,)
    case = Bad(body, raw, content_type, auth, statuses)
    return pytest.param(case, id=case_id)


def raw_json(text: str) -> bytes:
    """JSON text as sent byte for byte, so escapes like \\ud800 reach the parser intact."""
    return text.encode()


NOT_JSON: list[tuple[str, bytes, str | None, int]] = [  # each endpoint with a body gets all
    ("not_json", b"not json", "application/json", 422),
    ("truncated_json", b'{"password": "' + PASSWORD.encode(), "application/json", 422),
    ("empty_body", b"", "application/json", 422),
    ("json_null", b"null", "application/json", 422),
    ("json_array", b"[]", "application/json", 422),
    ("json_string", b'"correct horse battery staple"', "application/json", 422),
    ("json_number", b"12345678", "application/json", 422),
    ("nan", b'{"password": NaN}', "application/json", 422),
    ("invalid_utf8", b'{"password": "\xff\xfe\xfd"}', "application/json", 400),
    ("deeply_nested", b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
    ("body_over_64k", b'{"password": "' + LONG.encode() + b'"}', "application/json", 413),
    ("form_encoded", f"password={PASSWORD}".encode(), "application/x-www-form-urlencoded", 422),
    ("multipart", b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", 422),
    ("text_plain_json", f'{{"password": "{PASSWORD}"}}'.encode(), "text/plain", 422),
    ("xml", f"<password>{PASSWORD}</password>".encode(), "application/xml", 422),
    ("no_content_type", f'{{"password": "{PASSWORD}"}}'.encode(), None, 422),
]
BODY_ENDPOINTS = [
    "/v1/accounts",
    "/v1/login",
    "/v1/login/mfa",
    "/v1/reauthenticate",
    "/v1/account/password",
    "/v1/account/email",
    "/v1/token/refresh",
]

# POST /v1/accounts (valid: {"username": NEW_USER, "email": ..., "password": ...})
ADDRESS = "fresh@example.org"
REGISTER = [
    bad("missing_everything", {}),
    bad("missing_username", {"email": ADDRESS, "password": NEW_PASSWORD}),
    bad("missing_email", {"username": NEW_USER, "password": NEW_PASSWORD}),
    bad("missing_password", {"username": NEW_USER, "email": ADDRESS}),
    bad("username_number", {"username": 12345, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_array", {"username": ["ann"], "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_object", {"username": NE, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_null", {"username": None, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_bool", {"username": True, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_empty", {"username": "", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_too_short", {"username": "ab", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_65", {"username": "a" * 65, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_100k", {"username": LONG, "email": ADDRESS, "password": NEW_PASSWORD}, 413),
    bad("username_leading_dash", {"username": "-ann", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_space", {"username": "ann smith", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_newline", {"username": "ann.b\n", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_rtl", {"username": f"ann{RTL}gpj", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_zwsp", {"username": f"ann{ZWSP}b", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_emoji", {"username": "ann🔐b", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad(
        "username_fullwidth",
        {"username": "\uff41\uff4e\uff4e", "email": ADDRESS, "password": NEW_PASSWORD},
    ),
    bad("username_nul", {"username": "ann\x00b", "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_sql_or", {"username": SQL_OR, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad("username_sql_drop", {"username": SQL_DROP, "email": ADDRESS, "password": NEW_PASSWORD}),
    bad(
        "username_lone_surrogate",
        raw=raw_json(
            f'{{"username": "ann\\ud800", "email": "{ADDRESS}", "password": "{NEW_PASSWORD}"}}'
        ),
    ),
    bad("username_taken", {"username": USER, "email": ADDRESS, "password": NEW_PASSWORD}, 409),
    bad(
        "username_taken_other_case",
        {"username": USER_UPPER, "email": ADDRESS, "password": NEW_PASSWORD},
        409,
    ),
    bad("email_number", {"username": NEW_USER, "email": 42, "password": NEW_PASSWORD}),
    bad("email_null", {"username": NEW_USER, "email": None, "password": NEW_PASSWORD}),
    bad("email_array", {"username": NEW_USER, "email": [ADDRESS], "password": NEW_PASSWORD}),
    bad("email_object", {"username": NEW_USER, "email": NE, "password": NEW_PASSWORD}),
    bad("email_empty", {"username": NEW_USER, "email": "", "password": NEW_PASSWORD}),
    bad("email_no_at", {"username": NEW_USER, "email": "ann.example.org", "password": "x" * 9}),
    bad("email_no_dot", {"username": NEW_USER, "email": "ann@localhost", "password": "x" * 9}),
    bad(
        "email_too_long",
        {"username": NEW_USER, "email": "a" * 60 + "@" + "b" * 190 + ".org", "password": "x" * 9},
    ),
    bad("email_sql_or", {"username": NEW_USER, "email": SQL_OR, "password": NEW_PASSWORD}),
    bad(
        "email_sql_drop",
        {"username": NEW_USER, "email": f"x{SQL_DROP}@example.org", "password": NEW_PASSWORD},
    ),
    bad(
        "email_newline",
        {"username": NEW_USER, "email": "ann@example.org\n", "password": NEW_PASSWORD},
    ),
    bad(
        "email_nul",
        {"username": NEW_USER, "email": "ann\x00@example.org", "password": NEW_PASSWORD},
    ),
    bad(
        "email_rtl_in_domain",
        {"username": NEW_USER, "email": f"ann@exa{RTL}elpm.org", "password": NEW_PASSWORD},
    ),
    bad(
        "email_zwsp_in_domain",
        {"username": NEW_USER, "email": f"ann@exa{ZWSP}mple.org", "password": NEW_PASSWORD},
    ),
    bad(
        "email_lone_surrogate",
        raw=raw_json(
            f'{{"username": "{NEW_USER}", "email": "a\\udc00@example.org", '
            f'"password": "{NEW_PASSWORD}"}}'
        ),
    ),
    bad("password_number", {"username": NEW_USER, "email": ADDRESS, "password": 123456789}),
    bad("password_null", {"username": NEW_USER, "email": ADDRESS, "password": None}),
    bad("password_array", {"username": NEW_USER, "email": ADDRESS, "password": [NEW_PASSWORD]}),
    bad("password_object", {"username": NEW_USER, "email": ADDRESS, "password": NE}),
    bad("password_bool", {"username": NEW_USER, "email": ADDRESS, "password": True}),
    bad("password_empty", {"username": NEW_USER, "email": ADDRESS, "password": ""}),
    bad("password_too_short", {"username": NEW_USER, "email": ADDRESS, "password": "sh0rt!"}),
    bad("password_129", {"username": NEW_USER, "email": ADDRESS, "password": "q7" * 64 + "z"}),
    bad("password_1025", {"username": NEW_USER, "email": ADDRESS, "password": "q" * 1025}),
    bad("password_100k", {"username": NEW_USER, "email": ADDRESS, "password": LONG}, 413),
    bad("password_common", {"username": NEW_USER, "email": ADDRESS, "password": "password123"}),
    bad(
        "password_is_username",
        {"username": "ann.nobody", "email": ADDRESS, "password": "ann.nobody"},
    ),
    bad("password_is_email", {"username": NEW_USER, "email": ADDRESS, "password": ADDRESS}),
    bad(
        "password_only_zero_width",
        {"username": NEW_USER, "email": ADDRESS, "password": ZWSP * 3 + ZWJ * 3},
    ),
    bad(
        "password_lone_surrogate",
        raw=raw_json(
            f'{{"username": "{NEW_USER}", "email": "{ADDRESS}", '
            f'"password": "a long passphrase \\ud800 here"}}'
        ),
    ),
    bad(
        "extra_role",
        {"username": NEW_USER, "email": ADDRESS, "password": NEW_PASSWORD, "roles": ["support"]},
    ),
    bad(
        "extra_account_id",
        {"username": NEW_USER, "email": ADDRESS, "password": NEW_PASSWORD, "account_id": ACCOUNT},
    ),
]

# POST /v1/login (valid: {"username": USER, "password": PASSWORD})
STRANGER = "nobody-at-all"  # no such account, so a wrong password counts nowhere
LOGIN = [
    bad("missing_everything", {}),
    bad("missing_username", {"password": PASSWORD}),
    bad("missing_password", {"username": USER}),
    bad("username_number", {"username": 12345, "password": PASSWORD}),
    bad("username_array", {"username": [USER], "password": PASSWORD}),
    bad("username_object", {"username": NE, "password": PASSWORD}),
    bad("username_null", {"username": None, "password": PASSWORD}),
    bad("username_bool", {"username": True, "password": PASSWORD}),
    bad("username_empty", {"username": "", "password": PASSWORD}),
    bad("username_65", {"username": "a" * 65, "password": PASSWORD}),
    bad("username_100k", {"username": LONG, "password": PASSWORD}, 413),
    bad("username_rtl", {"username": f"{RTL}{USER}", "password": PASSWORD}, 401),
    bad("username_zwsp", {"username": f"{USER}{ZWSP}", "password": PASSWORD}, 401),
    bad("username_emoji", {"username": "🔐🔐🔐", "password": PASSWORD}, 401),
    bad("username_sql_or", {"username": SQL_OR, "password": PASSWORD}, 401),
    bad("username_sql_drop", {"username": SQL_DROP, "password": PASSWORD}, 401),
    bad("username_sql_or_admin", {"username": "admin' --", "password": "x"}, 401),
    bad(
        "username_nul",
        {"username": "ann\x00", "password": PASSWORD},
        (401, 422),
    ),
    bad(
        "username_lone_surrogate",
        raw=raw_json(f'{{"username": "\\ud800", "password": "{PASSWORD}"}}'),
    ),
    bad("password_number", {"username": USER, "password": 12345678}),
    bad("password_array", {"username": USER, "password": [PASSWORD]}),
    bad("password_object_ne", {"username": USER, "password": NE}),
    bad("password_object_gt", {"username": USER, "password": {"$gt": ""}}),
    bad("password_null", {"username": USER, "password": None}),
    bad("password_bool", {"username": USER, "password": True}),
    bad("password_empty", {"username": USER, "password": ""}),
    bad("password_1025", {"username": USER, "password": "p" * 1025}),
    bad("password_100k", {"username": USER, "password": LONG}, 413),
    bad("password_sql_or_stranger", {"username": STRANGER, "password": SQL_OR}, 401),
    bad("password_sql_drop_stranger", {"username": STRANGER, "password": SQL_DROP}, 401),
    bad("password_rtl_stranger", {"username": STRANGER, "password": f"{RTL}{PASSWORD}"}, 401),
    bad("password_emoji_stranger", {"username": STRANGER, "password": "🔐🔑🗝️🔓"}, 401),
    bad(
        "password_lone_surrogate",
        raw=raw_json(f'{{"username": "{USER}", "password": "pass\\ud800word"}}'),
    ),
    bad("device_token_number", {"username": USER, "password": PASSWORD, "device_token": 7}),
    bad("device_token_object", {"username": USER, "password": PASSWORD, "device_token": NE}),
    bad("device_token_257", {"username": USER, "password": PASSWORD, "device_token": "d" * 257}),
    bad(
        "device_token_sql_stranger",
        {"username": STRANGER, "password": "x", "device_token": SQL_OR},
        401,
    ),
    bad("extra_otp", {"username": USER, "password": PASSWORD, "otp": "123456"}),
    bad("extra_admin", {"username": USER, "password": PASSWORD, "admin": True}),
    bad("extra_acr", {"username": USER, "password": PASSWORD, "acr": "aal2"}),
]

# POST /v1/login/mfa (valid: {"mfa_token": MFA, "otp": <the current code>})
MFA_CASES = [
    bad("missing_everything", {}),
    bad("missing_mfa_token", {"otp": "123456"}),
    bad("missing_second_factor", {"mfa_token": MFA}),
    bad("otp_and_recovery_code", {"mfa_token": MFA, "otp": "123456", "recovery_code": "a" * 16}),
    bad("mfa_token_number", {"mfa_token": 12345, "otp": "123456"}),
    bad("mfa_token_array", {"mfa_token": [MFA], "otp": "123456"}),
    bad("mfa_token_object", {"mfa_token": NE, "otp": "123456"}),
    bad("mfa_token_null", {"mfa_token": None, "otp": "123456"}),
    bad("mfa_token_bool", {"mfa_token": False, "otp": "123456"}),
    bad("mfa_token_empty", {"mfa_token": "", "otp": "123456"}),
    bad("mfa_token_8193", {"mfa_token": "a" * 8193, "otp": "123456"}),
    bad("mfa_token_100k", {"mfa_token": LONG, "otp": "123456"}, 413),
    bad("mfa_token_garbage", {"mfa_token": "garbage", "otp": "123456"}, 401),
    bad("mfa_token_sql_or", {"mfa_token": SQL_OR, "otp": "123456"}, 401),
    bad("mfa_token_sql_drop", {"mfa_token": SQL_DROP, "otp": "123456"}, 401),
    bad("mfa_token_rtl", {"mfa_token": f"{RTL}{MFA}", "otp": "123456"}, 401),
    bad("mfa_token_zwsp", {"mfa_token": f"{MFA}{ZWSP}", "otp": "123456"}, 401),
    bad("mfa_token_emoji", {"mfa_token": "🔐.🔐.🔐", "otp": "123456"}, 401),
    bad("mfa_token_refresh_token", {"mfa_token": REFRESH, "otp": "123456"}, 401),
    bad(
        "mfa_token_lone_surrogate",
        raw=raw_json('{"mfa_token": "a.b.\\ud800", "otp": "123456"}'),
    ),
    bad("otp_number", {"mfa_token": MFA, "otp": 123456}),
    bad("otp_array", {"mfa_token": MFA, "otp": ["123456"]}),
    bad("otp_object", {"mfa_token": MFA, "otp": NE}),
    bad("otp_null_alone", {"mfa_token": MFA, "otp": None}),
    bad("otp_bool", {"mfa_token": MFA, "otp": True}),
    bad("otp_empty", {"mfa_token": MFA, "otp": ""}),
    bad("otp_65", {"mfa_token": MFA, "otp": "1" * 65}),
    bad("otp_100k", {"mfa_token": MFA, "otp": LONG}, 413),
    bad("otp_lone_surrogate", raw=raw_json(f'{{"mfa_token": "{MFA}", "otp": "12345\\ud800"}}')),
    bad("recovery_code_number", {"mfa_token": MFA, "recovery_code": 1234567890123456}),
    bad("recovery_code_object", {"mfa_token": MFA, "recovery_code": NE}),
    bad("recovery_code_empty", {"mfa_token": MFA, "recovery_code": ""}),
    bad("recovery_code_65", {"mfa_token": MFA, "recovery_code": "a" * 65}),
    bad(
        "recovery_code_lone_surrogate",
        raw=raw_json(f'{{"mfa_token": "{MFA}", "recovery_code": "abcd-\\udfff"}}'),
    ),
    bad("extra_username", {"mfa_token": MFA, "otp": "123456", "username": USER}),
    bad("extra_amr", {"mfa_token": MFA, "otp": "123456", "amr": ["mfa"]}),
]

# POST /v1/reauthenticate (valid: {"password": PASSWORD}, with the user's token)
REAUTH = [
    bad("missing_password", {}),
    bad("password_number", {"password": 12345678}),
    bad("password_array", {"password": [PASSWORD]}),
    bad("password_object", {"password": NE}),
    bad("password_null", {"password": None}),
    bad("password_bool", {"password": True}),
    bad("password_empty", {"password": ""}),
    bad("password_1025", {"password": "p" * 1025}),
    bad("password_100k", {"password": LONG}, 413),
    bad("password_lone_surrogate", raw=raw_json('{"password": "\\udbff\\udbff"}')),
    bad("otp_number", {"password": PASSWORD, "otp": 123456}),
    bad("otp_object", {"password": PASSWORD, "otp": NE}),
    bad("otp_empty", {"password": PASSWORD, "otp": ""}),
    bad("otp_and_recovery_code", {"password": PASSWORD, "otp": "1", "recovery_code": "2"}),
    bad("extra_new_password", {"password": PASSWORD, "new_password": NEW_PASSWORD}),
    bad("extra_amr", {"password": PASSWORD, "amr": ["pwd", "otp", "mfa"]}),
]

# POST /v1/account/password (valid: {"current_password": PASSWORD, "new_password": ...})
CHANGE_PASSWORD = [
    bad("missing_everything", {}),
    bad("missing_current", {"new_password": NEW_PASSWORD}),
    bad("missing_new", {"current_password": PASSWORD}),
    bad("current_number", {"current_password": 1, "new_password": NEW_PASSWORD}),
    bad("current_object", {"current_password": NE, "new_password": NEW_PASSWORD}),
    bad("current_null", {"current_password": None, "new_password": NEW_PASSWORD}),
    bad("current_empty", {"current_password": "", "new_password": NEW_PASSWORD}),
    bad("new_number", {"current_password": PASSWORD, "new_password": 123456789}),
    bad("new_array", {"current_password": PASSWORD, "new_password": [NEW_PASSWORD]}),
    bad("new_object", {"current_password": PASSWORD, "new_password": NE}),
    bad("new_null", {"current_password": PASSWORD, "new_password": None}),
    bad("new_bool", {"current_password": PASSWORD, "new_password": True}),
    bad("new_empty", {"current_password": PASSWORD, "new_password": ""}),
    bad("new_too_short", {"current_password": PASSWORD, "new_password": "sh0rt!"}),
    bad("new_129", {"current_password": PASSWORD, "new_password": "q7" * 64 + "z"}),
    bad("new_1025", {"current_password": PASSWORD, "new_password": "q" * 1025}),
    bad("new_100k", {"current_password": PASSWORD, "new_password": LONG}, 413),
    bad("new_common", {"current_password": PASSWORD, "new_password": "qwertyuiop"}),
    bad("new_is_username", {"current_password": PASSWORD, "new_password": USER}),
    bad("new_zero_width_short", {"current_password": PASSWORD, "new_password": ZWSP * 7}),
    bad(
        "new_lone_surrogate",
        raw=raw_json(
            f'{{"current_password": "{PASSWORD}", "new_password": "a long \\ud800 passphrase"}}'
        ),
    ),
    bad("otp_number", {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "otp": 1}),
    bad(
        "extra_account_id",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "account_id": ACCOUNT},
    ),
    bad(
        "extra_password_hash",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "password_hash": "$argon2"},
    ),
]

# POST /v1/account/email (valid: {"current_password": PASSWORD, "email": ...})
CHANGE_EMAIL = [
    bad("missing_everything", {}),
    bad("missing_email", {"current_password": PASSWORD}),
    bad("missing_current", {"email": ADDRESS}),
    bad("current_object", {"current_password": NE, "email": ADDRESS}),
    bad("email_number", {"current_password": PASSWORD, "email": 42}),
    bad("email_array", {"current_password": PASSWORD, "email": [ADDRESS]}),
    bad("email_object", {"current_password": PASSWORD, "email": NE}),
    bad("email_null", {"current_password": PASSWORD, "email": None}),
    bad("email_bool", {"current_password": PASSWORD, "email": True}),
    bad("email_empty", {"current_password": PASSWORD, "email": ""}),
    bad("email_no_at", {"current_password": PASSWORD, "email": "ann.example.org"}),
    bad("email_two_ats", {"current_password": PASSWORD, "email": "ann@b@example.org"}),
    bad("email_255", {"current_password": PASSWORD, "email": "a" * 64 + "@" + "b" * 186 + ".org"}),
    bad("email_100k", {"current_password": PASSWORD, "email": LONG + "@example.org"}, 413),
    bad("email_sql_or", {"current_password": PASSWORD, "email": SQL_OR}),
    bad("email_sql_drop", {"current_password": PASSWORD, "email": SQL_DROP}),
    bad("email_newline", {"current_password": PASSWORD, "email": "ann@example.org\nBcc: x@y.z"}),
    bad(
        "email_nul",
        {"current_password": PASSWORD, "email": "ann@example.org\x00"},
    ),
    bad(
        "email_rtl_in_domain",
        {"current_password": PASSWORD, "email": f"ann@exa{RTL}elpm.org"},
    ),
    bad(
        "email_zwsp_in_domain",
        {"current_password": PASSWORD, "email": f"ann@exa{ZWSP}mple.org"},
    ),
    bad(
        "email_lone_surrogate",
        raw=raw_json(f'{{"current_password": "{PASSWORD}", "email": "\\ud800@example.org"}}'),
    ),
    bad("extra_username", {"current_password": PASSWORD, "email": ADDRESS, "username": "x"}),
]

# POST /v1/token/refresh (valid: {"refresh_token": REFRESH})
REFRESH_CASES = [
    bad("missing_refresh_token", {}),
    bad("number", {"refresh_token": 12345}),
    bad("array", {"refresh_token": [REFRESH]}),
    bad("object", {"refresh_token": NE}),
    bad("null", {"refresh_token": None}),
    bad("bool", {"refresh_token": True}),
    bad("empty", {"refresh_token": ""}),
    bad("513_chars", {"refresh_token": "r" * 513}),
    bad("100k", {"refresh_token": LONG}, 413),
    bad("garbage", {"refresh_token": "garbage"}, 401),
    bad("sql_or", {"refresh_token": SQL_OR}, 401),
    bad("sql_drop", {"refresh_token": SQL_DROP}, 401),
    bad("sql_in_account_part", {"refresh_token": f"rt1.{SQL_OR}.{SESSION}.0.xyz"}, 401),
    bad("sql_in_session_part", {"refresh_token": f"rt1.{ACCOUNT}.{SQL_DROP}.0.xyz"}, 401),
    bad("rtl_inside", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.0.{RTL}abc"}, 401),
    bad("zwsp_appended", {"refresh_token": f"{REFRESH}{ZWSP}"}, 401),
    bad("emoji", {"refresh_token": "rt1.🔐.🔐.0.🔐"}, 401),
    bad(
        "nul_in_session", {"refresh_token": f"rt1.{ACCOUNT}.a\x00b.0.xyz"}, 422
    ),  # NUL is refused before any lookup
    bad("right_ids_wrong_secret", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.0.not-it"}, 401),
    bad("next_generation", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.1.not-it"}, 401),
    bad("negative_generation", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.-1.x"}, 401),
    bad("huge_generation", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.{'9' * 400}.x"}, 401),
    bad("fullwidth_generation", {"refresh_token": f"rt1.{ACCOUNT}.{SESSION}.\uff10.x"}, 401),
    bad("unknown_account", {"refresh_token": f"rt1.{uuid.uuid4()}.{SESSION}.0.x"}, 401),
    bad("access_token", {"refresh_token": MFA}, 401),
    bad("six_parts", {"refresh_token": f"{REFRESH}.more"}, 401),
    bad("lone_surrogate", raw=raw_json('{"refresh_token": "rt1.\\ud800.x.0.y"}')),
    bad("extra_session_id", {"refresh_token": REFRESH, "session_id": SESSION}),
]

# Bearer endpoints: a valid body, and a token wrong in one way each.
TOKEN_KINDS = [
    "no_token",
    "empty_bearer",
    "garbage",
    "three_garbage_segments",
    "basic_scheme",
    "valid_token_wrong_scheme",
    "token_and_trailing_word",
    "oversized",
    "tampered",
    "expired",
    "foreign_key",
    "alg_none",
    "hs256",
    "wrong_audience",
    "wrong_issuer",
    "mfa_token_as_access",
    "refresh_token_as_access",
    "ended_session",
    "unknown_account",
]
VALID_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/reauthenticate"): {"password": PASSWORD},
    ("POST", "/v1/account/password"): {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    ("POST", "/v1/account/email"): {"current_password": PASSWORD, "email": ADDRESS},
    ("POST", "/v1/logout"): None,
    ("GET", "/v1/me"): None,
}

# Running a case ---------------------------------------------------------------------


def _fill(value: Any, env: Env) -> Any:
    """``value`` with every placeholder replaced by the module's real value."""
    if isinstance(value, str):
        for marker, real in (
            (NEW_USER, fresh_name()),
            (USER_UPPER, env.username.upper()),
            (USER, env.username),
            (MFA, env.mfa_token),
            (REFRESH, env.refresh_token),
            (ACCOUNT, env.account_id),
            (SESSION, env.session_id),
        ):
            value = value.replace(marker, real)
        return value
    if isinstance(value, dict):
        return {_fill(k, env): _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(item, env) for item in value]
    return value


def _secrets_in(value: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _secrets_in(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _secrets_in(item, key)
    elif isinstance(value, str) and key in SECRET_FIELDS | TOKEN_FIELDS:
        yield value


def _echoed(text: str, secrets: set[str]) -> list[str]:
    """The secrets (of six characters or more) that ``text`` repeats, raw or JSON-escaped."""
    found = []
    for secret in secrets:
        if len(secret) < 6:
            continue
        escaped = json.dumps(secret)[1:-1]
        if secret in text or escaped in text:
            found.append(secret[:40])
    return found


async def send(env: Env, method: str, path: str, case: Bad) -> tuple[httpx.Response, set[str], int]:
    """Send ``case``; the response, the secret values it carried, and the events it wrote."""
    headers = dict(env.authorizations[case.auth])
    secrets = {PASSWORD, NEW_PASSWORD, env.refresh_token, env.mfa_token}
    secrets |= {value.removeprefix("Bearer ") for value in headers.values()}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.raw is not None:
        content = _fill(case.raw.decode("utf-8", "surrogateescape"), env).encode(
            "utf-8", "surrogateescape"
        )
    elif case.body is not None:
        body = _fill(case.body, env)
        secrets |= set(_secrets_in(body))
        content = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        content = None
    before = await event_count(env.core)
    response = await env.client.request(method, path, content=content, headers=headers)
    return response, secrets, await event_count(env.core) - before


def assert_refused(response: httpx.Response, secrets: set[str], written: int) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert is_problem(response), response.text[:500]
    assert written == 0, f"{written} event(s) written by a refused request"
    assert not _echoed(response.text, secrets), "a submitted secret is echoed"
    assert not _echoed(str(response.headers), secrets), "a submitted secret is echoed"


# Tests ------------------------------------------------------------------------------


def _not_json_cases() -> list[Any]:
    return [
        pytest.param(
            path,
            Bad(raw=raw, content_type=content_type, status=(status,)),
            id=f"{path}-{name}",
        )
        for path in BODY_ENDPOINTS
        for name, raw, content_type, status in NOT_JSON
    ]


@pytest.mark.parametrize(("path", "case"), _not_json_cases())
async def test_a_body_that_is_not_a_json_object_is_refused(env: Env, path: str, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", path, case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", REGISTER)
async def test_bad_registration_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/accounts", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", LOGIN)
async def test_bad_login_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/login", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", MFA_CASES)
async def test_bad_second_step_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/login/mfa", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", REAUTH)
async def test_bad_reauthentication_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/reauthenticate", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", CHANGE_PASSWORD)
async def test_bad_password_change_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/account/password", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", CHANGE_EMAIL)
async def test_bad_email_change_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/account/email", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("case", REFRESH_CASES)
async def test_bad_refresh_is_refused(env: Env, case: Bad) -> None:
    response, secrets, written = await send(env, "POST", "/v1/token/refresh", case)
    assert_refused(response, secrets, written)
    assert response.status_code in case.status


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize(("method", "path"), list(VALID_BODIES), ids=lambda v: str(v))
async def test_a_bad_bearer_token_is_refused(env: Env, method: str, path: str, kind: str) -> None:
    case = Bad(body=VALID_BODIES[(method, path)], auth=kind, status=(401,))
    response, secrets, written = await send(env, method, path, case)
    assert_refused(response, secrets, written)
    assert response.status_code == 401
    assert response.json()["code"] in {"missing_token", "invalid_token"}


WRONG_METHODS = [
    ("GET", "/v1/accounts"),
    ("PUT", "/v1/login"),
    ("GET", "/v1/login/mfa"),
    ("DELETE", "/v1/reauthenticate"),
    ("GET", "/v1/account/password"),
    ("PATCH", "/v1/account/email"),
    ("GET", "/v1/token/refresh"),
    ("GET", "/v1/logout"),
    ("POST", "/v1/me"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
async def test_a_wrong_method_is_refused(env: Env, method: str, path: str) -> None:
    case = Bad(body={"password": PASSWORD}, status=(405,))
    response, secrets, written = await send(env, method, path, case)
    assert_refused(response, secrets, written)
    assert response.status_code == 405


# Well-formed but wrong credentials: refused, and counted like any other wrong guess ------


@dataclass
class Fresh:
    """A user of one case's own, so the failures it counts disturb no other case."""

    username: str
    account_id: str
    access_token: str = ""
    mfa_token: str = ""
    code: str = ""  # the TOTP code valid right now
    recovery_code: str = ""


async def fresh_user(env: Env, *, two_factor: bool) -> Fresh:
    username = fresh_name()
    user = Fresh(username, await register(env.client, username))
    if not two_factor:
        user.access_token = (await password_login(env.client, username))["access_token"]
        return user
    enrolled = await enable_through_domain(env.core, user.account_id, env.clock())
    first = (await password_login(env.client, username))["mfa_token"]
    session = await env.client.post(
        "/v1/login/mfa", json={"mfa_token": first, "recovery_code": enrolled.codes[0]}
    )
    assert session.status_code == 200, session.text
    user.access_token = session.json()["access_token"]
    user.mfa_token = (await password_login(env.client, username))["mfa_token"]
    user.code = otp(enrolled.secret, env.clock())
    user.recovery_code = enrolled.codes[1]
    return user


ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
PASSWORD_FAILED = ["login.failed"]
CODE_FAILED = ["twofa.otp_failed"]


def odd(
    case_id: str, path: str, body: Any, code: str, events: list[str], *, two_factor: bool = False
) -> Any:
    return pytest.param(path, body, code, events, two_factor, id=case_id)


ODD_CREDENTIALS = [
    odd(
        "login_password_sql_or",
        "/v1/login",
        lambda u: {"username": u.username, "password": SQL_OR},
        "invalid_credentials",
        PASSWORD_FAILED,
    ),
    odd(
        "login_password_sql_drop",
        "/v1/login",
        lambda u: {"username": u.username, "password": SQL_DROP},
        "invalid_credentials",
        PASSWORD_FAILED,
    ),
    odd(
        "login_password_rtl_override",
        "/v1/login",
        lambda u: {"username": u.username, "password": f"{RTL}{PASSWORD}"},
        "invalid_credentials",
        PASSWORD_FAILED,
    ),
    odd(
        "login_right_password_plus_zero_width_space",
        "/v1/login",
        lambda u: {"username": u.username, "password": f"{PASSWORD}{ZWSP}"},
        "invalid_credentials",
        PASSWORD_FAILED,
    ),
    odd(
        "login_password_emoji",
        "/v1/login",
        lambda u: {"username": u.username, "password": "🔐🔑🗝️🔓🔐🔑🗝️🔓"},
        "invalid_credentials",
        PASSWORD_FAILED,
    ),
    odd(
        "mfa_otp_sql_or",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "otp": SQL_OR},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_otp_in_arabic_indic_digits",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "otp": u.code.translate(ARABIC_INDIC)},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_otp_in_fullwidth_digits",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "otp": u.code.translate(FULLWIDTH)},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_otp_after_rtl_override",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "otp": f"{RTL}{u.code}"},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_otp_with_zero_width_space",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "otp": f"{u.code[:3]}{ZWSP}{u.code[3:]}"},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_recovery_code_sql_drop",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "recovery_code": SQL_DROP},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_recovery_code_with_zero_width_joiner",
        "/v1/login/mfa",
        lambda u: {"mfa_token": u.mfa_token, "recovery_code": f"{ZWJ}{u.recovery_code}"},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "mfa_right_recovery_code_in_fullwidth",
        "/v1/login/mfa",
        lambda u: {
            "mfa_token": u.mfa_token,
            "recovery_code": "".join(
                chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in u.recovery_code
            ),
        },
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "reauthenticate_password_sql_or",
        "/v1/reauthenticate",
        lambda u: {"password": SQL_OR},
        "invalid_password",
        PASSWORD_FAILED,
    ),
    odd(
        "reauthenticate_right_password_plus_zero_width_space",
        "/v1/reauthenticate",
        lambda u: {"password": f"{PASSWORD}{ZWSP}"},
        "invalid_password",
        PASSWORD_FAILED,
    ),
    odd(
        "reauthenticate_right_otp_in_fullwidth_digits",
        "/v1/reauthenticate",
        lambda u: {"password": PASSWORD, "otp": u.code.translate(FULLWIDTH)},
        "invalid_code",
        CODE_FAILED,
        two_factor=True,
    ),
    odd(
        "password_change_current_sql_drop",
        "/v1/account/password",
        lambda u: {"current_password": SQL_DROP, "new_password": NEW_PASSWORD},
        "invalid_password",
        PASSWORD_FAILED,
    ),
    odd(
        "email_change_current_rtl_override",
        "/v1/account/email",
        lambda u: {"current_password": f"{RTL}{PASSWORD}", "email": ADDRESS},
        "invalid_password",
        PASSWORD_FAILED,
    ),
]


async def events_after(env: Env, position: int) -> list[str]:
    rows = await env.core.pool.fetch(
        "SELECT event_type FROM events WHERE position > $1 ORDER BY position", position
    )
    return [row["event_type"] for row in rows]


@pytest.mark.parametrize(("path", "body", "code", "events", "two_factor"), ODD_CREDENTIALS)
async def test_odd_but_well_formed_credentials_are_ordinary_failures(
    env: Env, path: str, body: Any, code: str, events: list[str], two_factor: bool
) -> None:
    """Not bad input but a wrong guess: 401, and only the failure the guess must count."""
    user = await fresh_user(env, two_factor=two_factor)
    sent = body(user)
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.client.post(
        path, json=sent, headers={"Authorization": f"Bearer {user.access_token}"}
    )
    assert response.status_code == 401, response.text
    assert is_problem(response) and response.json()["code"] == code
    assert await events_after(env, before) == events
    secrets = {PASSWORD, user.access_token, user.mfa_token, *_secrets_in(sent)}
    assert not _echoed(response.text, secrets), "a submitted secret is echoed"


@pytest.mark.parametrize(("password", "status"), [(PASSWORD, 200), ("not the password", 401)])
async def test_a_non_ascii_device_token_is_merely_untrusted(
    env: Env, password: str, status: int
) -> None:
    username = fresh_name()
    account_id = await register(env.client, username)
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.client.post(
        "/v1/login",
        json={
            "username": username,
            "password": password,
            "device_token": f"dt1.{account_id}.device.é",
        },
    )
    assert response.status_code == status, response.text
    if status == 401:
        assert await events_after(env, before) == ["login.failed"]


async def test_a_forged_refresh_token_of_an_older_generation_revokes_nothing(env: Env) -> None:
    username = fresh_name()
    account_id = await register(env.client, username)
    tokens = await password_login(env.client, username)
    rotated = await env.client.post(
        "/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    session_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    forged = f"rt1.{account_id}.{session_id}.0.{'A' * 43}"  # the public ids, a made-up secret
    before = await event_count(env.core)
    response = await env.client.post("/v1/token/refresh", json={"refresh_token": forged})
    written = await event_count(env.core) - before
    assert response.status_code == 401 and is_problem(response)
    assert response.json()["code"] == "invalid_refresh_token"
    assert written == 0, "the forged token revoked the session"
    me = await env.client.get(
        "/v1/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
    )
    assert me.status_code == 200
