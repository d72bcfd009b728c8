"""Bad input to every auth and enrolment endpoint: always a 4xx problem, no event, no
secret echoed.

One matrix: each table below maps an endpoint to the bad requests tried on it, and every
case is sent and checked the same way (``assert_refused`` in tests/support/bad_inputs.py,
which also builds the one world of apps, users and tokens that serves the whole module).
Well-formed but wrong credentials and codes are not bad input: they are ordinary
failures, counted toward throttling and the lockout, and tested as such at the end (each
with a user of its own).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import jwt
import pytest
import pytest_asyncio

from shared.security import recovery
from tests.support.apps import is_problem
from tests.support.bad_inputs import (
    ACCOUNT,
    MFA,
    NEW_PASSWORD,
    NEW_USER,
    PASSWORD,
    REASON,
    REFRESH,
    REQUEST,
    RESET_TARGET,
    SESSION,
    SUPPORT_A,
    TARGET,
    TICKET,
    USER,
    USER_UPPER,
    VALID,
    Bad,
    Endpoint,
    Env,
    Fresh,
    FreshKind,
    assert_refused,
    bearer,
    echoed,
    events_after,
    fresh_name,
    fresh_user,
    password_login,
    register,
    values_in,
    world,
)
from tests.support.database import event_count
from tests.support.totp import otp

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SQL_OR = "' OR 1=1 --"
SQL_DROP = '"; DROP TABLE events; --'
RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
ZWSP = "\u200b"  # ZERO WIDTH SPACE
ZWJ = "\u200d"  # ZERO WIDTH JOINER
NE = {"$ne": None}
LONG = "x" * 100_000  # over the 64 KiB body limit
ADDRESS = "fresh@example.org"
GOOD_OTP = {"otp": "123456"}
A_CODE = "7hq2-9x4k-m3rd-0pzv"  # shaped like a recovery code


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    postgres_url: str, template_database: str, kafka_bootstrap: str
) -> AsyncIterator[Env]:
    async with world(postgres_url, template_database, kafka_bootstrap) as built:
        yield built


# The endpoints ----------------------------------------------------------------------

# What no auth refusal may repeat (its bodies hold usernames and addresses too).
AUTH_SECRETS = frozenset(
    {"password", "current_password", "new_password", "otp", "recovery_code"}
    | {"mfa_token", "refresh_token", "device_token"}
)


def auth_endpoint(
    name: str, method: str, path: str, body: Any = None, *, bearer: bool = True
) -> Endpoint:
    """An auth endpoint: its cases run as plain, with plain's token even where none is needed."""
    return Endpoint(name, "auth", method, path, "plain", body, bearer, AUTH_SECRETS)


def enrolment_endpoint(name: str, method: str, path: str, user: str, body: Any = None) -> Endpoint:
    return Endpoint(name, "enrolment", method, path, user, body)


RESETS = f"/v1/admin/accounts/{RESET_TARGET}/2fa/reset-requests/{REQUEST}"
ENDPOINTS = {
    endpoint.name: endpoint
    for endpoint in [
        auth_endpoint("register", "POST", "/v1/accounts", bearer=False),
        auth_endpoint("login", "POST", "/v1/login", bearer=False),
        auth_endpoint("login_mfa", "POST", "/v1/login/mfa", bearer=False),
        auth_endpoint("reauthenticate", "POST", "/v1/reauthenticate", {"password": PASSWORD}),
        auth_endpoint(
            "change_password",
            "POST",
            "/v1/account/password",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        ),
        auth_endpoint(
            "change_email",
            "POST",
            "/v1/account/email",
            {"current_password": PASSWORD, "email": ADDRESS},
        ),
        auth_endpoint("refresh", "POST", "/v1/token/refresh", bearer=False),
        auth_endpoint("logout", "POST", "/v1/logout"),
        auth_endpoint("me", "GET", "/v1/me"),
        enrolment_endpoint("start", "POST", "/v1/2fa/enrolment", "plain"),
        enrolment_endpoint("qr_svg", "GET", "/v1/2fa/enrolment/qr.svg", "pending"),
        enrolment_endpoint("qr_png", "GET", "/v1/2fa/enrolment/qr.png", "pending"),
        enrolment_endpoint("confirm", "POST", "/v1/2fa/enrolment/confirm", "pending", GOOD_OTP),
        enrolment_endpoint("status", "GET", "/v1/2fa", "plain"),
        enrolment_endpoint("regenerate", "POST", "/v1/2fa/recovery-codes", "enabled", GOOD_OTP),
        enrolment_endpoint("disable", "POST", "/v1/2fa/disable", "enabled", GOOD_OTP),
        enrolment_endpoint(
            "request_reset",
            "POST",
            f"/v1/admin/accounts/{TARGET}/2fa/reset-requests",
            "support_b",
            {"ticket": TICKET, "reason": REASON},
        ),
        enrolment_endpoint("approve", "POST", f"{RESETS}/approve", "support_b"),
        enrolment_endpoint(
            "cancel", "POST", f"{RESETS}/cancel", "support_b", {"reason": "The user found it"}
        ),
        enrolment_endpoint(
            "account_status", "GET", f"/v1/admin/accounts/{TARGET}/2fa", "support_b"
        ),
    ]
}


# Cases ------------------------------------------------------------------------------


class Case(NamedTuple):
    """One bad request, before it is put on an endpoint."""

    case_id: str
    options: dict[str, Any]


def bad(
    case_id: str,
    body: Any = VALID,
    status: int | tuple[int, ...] = 422,
    *,
    code: str | None = None,
    **options: Any,
) -> Case:
    """A request that must be refused with ``status`` (one of them, if several), and with
    the problem ``code`` where it says more than the status."""
    statuses = status if isinstance(status, tuple) else (status,)
    codes = (code,) if code else ()
    return Case(case_id, {"body": body, "status": statuses, "codes": codes, **options})


def matrix(table: dict[str, list[Case]]) -> list[Any]:
    """Each case of ``table`` on the endpoint it is listed under, as a pytest param."""
    return [
        pytest.param(Bad(ENDPOINTS[name], **case.options), id=f"{name}-{case.case_id}")
        for name, cases in table.items()
        for case in cases
    ]


def raw_json(text: str) -> bytes:
    """JSON text as sent byte for byte, so escapes like \\ud800 reach the parser intact."""
    return text.encode()


# Bad bodies, endpoint by endpoint ---------------------------------------------------

# POST /v1/accounts (valid: {"username": NEW_USER, "email": ..., "password": ...})
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


# POST /v1/2fa/enrolment/confirm and /v1/2fa/recovery-codes: {"otp": <1 to 64 characters>}.
OTP_BODY = [
    bad("missing_otp", {}),
    bad("otp_number", {"otp": 123456}),
    bad("otp_float", {"otp": 123456.0}),
    bad("otp_array", {"otp": ["123456"]}),
    bad("otp_object_ne", {"otp": NE}),
    bad("otp_object_gt", {"otp": {"$gt": ""}}),
    bad("otp_null", {"otp": None}),
    bad("otp_bool", {"otp": True}),
    bad("otp_empty", {"otp": ""}),
    bad("otp_65", {"otp": "1" * 65}),
    bad("otp_1000", {"otp": "9" * 1000}),
    bad("otp_100k", {"otp": LONG}, 413),
    bad("otp_100k_streamed", {"otp": LONG}, 413, streamed=True),
    bad("otp_nul", {"otp": "123\x00456"}),
    bad("otp_only_nul", {"otp": "\x00"}),
    bad("otp_lone_surrogate", raw=raw_json('{"otp": "12345\\ud800"}')),
    bad("otp_lone_low_surrogate", raw=raw_json('{"otp": "\\udfff"}')),
    bad("recovery_code_instead", {"recovery_code": A_CODE}),
    bad("otp_and_recovery_code", {"otp": "123456", "recovery_code": A_CODE}),
    bad("extra_secret", {"otp": "123456", "secret": "JBSWY3DPEHPK3PXP"}),
    bad("extra_account_id", {"otp": "123456", "account_id": str(uuid.uuid4())}),
    bad("extra_time_step", {"otp": "123456", "time_step": 1}),
    bad("extra_sql_key", {"otp": "123456", SQL_OR: SQL_DROP}),
    bad("key_with_nul", {"otp\x00": "123456"}),
    bad("key_case", {"OTP": "123456"}),
]


# POST /v1/2fa/disable: exactly one of otp and recovery_code.
DISABLE = [
    bad("missing_both", {}),
    bad("both_otp_and_recovery_code", {"otp": "123456", "recovery_code": A_CODE}),
    bad("both_null", {"otp": None, "recovery_code": None}),
    bad("otp_null_only", {"otp": None}),
    bad("recovery_code_null_only", {"recovery_code": None}),
    bad("otp_number", {"otp": 123456}),
    bad("otp_array", {"otp": ["123456"]}),
    bad("otp_object_ne", {"otp": NE}),
    bad("otp_bool", {"otp": False}),
    bad("otp_empty", {"otp": ""}),
    bad("otp_65", {"otp": "1" * 65}),
    bad("otp_100k", {"otp": LONG}, 413),
    bad("otp_nul", {"otp": "123456\x00"}),
    bad("otp_lone_surrogate", raw=raw_json('{"otp": "\\ud800123456"}')),
    bad("recovery_code_number", {"recovery_code": 1234567890123456}),
    bad("recovery_code_array", {"recovery_code": [A_CODE]}),
    bad("recovery_code_object_ne", {"recovery_code": NE}),
    bad("recovery_code_bool", {"recovery_code": True}),
    bad("recovery_code_empty", {"recovery_code": ""}),
    bad("recovery_code_65", {"recovery_code": "a" * 65}),
    bad("recovery_code_100k", {"recovery_code": LONG}, 413),
    bad("recovery_code_nul", {"recovery_code": A_CODE + "\x00"}),
    bad(
        "recovery_code_lone_surrogate",
        raw=raw_json('{"recovery_code": "7hq2-9x4k-m3rd-\\udfff"}'),
    ),
    bad("empty_otp_and_recovery_code", {"otp": "", "recovery_code": A_CODE}),
    bad("extra_method", {"otp": "123456", "method": "admin"}),
    bad("extra_session_id", {"otp": "123456", "session_id": uuid.uuid4().hex}),
    bad("extra_force", {"recovery_code": A_CODE, "force": True}),
]

# POST .../reset-requests: {"ticket": ^[\w.:/#-]{1,100}$, "reason": 1 to 500 characters}.
REQUEST_RESET = [
    bad("missing_everything", {}),
    bad("missing_ticket", {"reason": REASON}),
    bad("missing_reason", {"ticket": TICKET}),
    bad("ticket_number", {"ticket": 4711, "reason": REASON}),
    bad("ticket_array", {"ticket": [TICKET], "reason": REASON}),
    bad("ticket_object_ne", {"ticket": NE, "reason": REASON}),
    bad("ticket_null", {"ticket": None, "reason": REASON}),
    bad("ticket_bool", {"ticket": True, "reason": REASON}),
    bad("ticket_empty", {"ticket": "", "reason": REASON}),
    bad("ticket_101", {"ticket": "T" * 101, "reason": REASON}),
    bad("ticket_100k", {"ticket": LONG, "reason": REASON}, 413),
    bad("ticket_space", {"ticket": "SUP 4711", "reason": REASON}),
    bad("ticket_newline", {"ticket": "SUP-4711\n", "reason": REASON}),
    bad("ticket_tab", {"ticket": "SUP-\t4711", "reason": REASON}),
    bad("ticket_sql_or", {"ticket": SQL_OR, "reason": REASON}),
    bad("ticket_sql_drop", {"ticket": SQL_DROP, "reason": REASON}),
    bad("ticket_sql_quote_only", {"ticket": "SUP-4711'", "reason": REASON}),
    bad("ticket_json_text", {"ticket": '{"$ne":null}', "reason": REASON}),
    bad("ticket_html", {"ticket": "<script>x</script>", "reason": REASON}),
    bad("ticket_rtl", {"ticket": f"SUP-{RTL}1174", "reason": REASON}),
    bad("ticket_zwsp", {"ticket": f"SUP-{ZWSP}4711", "reason": REASON}),
    bad("ticket_emoji", {"ticket": "SUP-🔐", "reason": REASON}),
    bad("ticket_nul", {"ticket": "SUP-\x004711", "reason": REASON}),
    bad(
        "ticket_lone_surrogate",
        raw=raw_json(f'{{"ticket": "SUP-\\ud800", "reason": "{REASON}"}}'),
    ),
    bad("reason_number", {"ticket": TICKET, "reason": 42}),
    bad("reason_array", {"ticket": TICKET, "reason": [REASON]}),
    bad("reason_object_ne", {"ticket": TICKET, "reason": NE}),
    bad("reason_null", {"ticket": TICKET, "reason": None}),
    bad("reason_bool", {"ticket": TICKET, "reason": False}),
    bad("reason_empty", {"ticket": TICKET, "reason": ""}),
    bad("reason_501", {"ticket": TICKET, "reason": "r" * 501}),
    bad("reason_100k", {"ticket": TICKET, "reason": LONG}, 413),
    bad(
        "reason_100k_streamed",
        {"ticket": TICKET, "reason": LONG},
        413,
        streamed=True,
    ),
    bad(
        "reason_nul",
        {"ticket": TICKET, "reason": "phone lost\x00"},
    ),
    bad(
        "reason_lone_surrogate",
        raw=raw_json(f'{{"ticket": "{TICKET}", "reason": "lost \\ud800 phone"}}'),
    ),
    bad(
        "extra_requested_by",
        {"ticket": TICKET, "reason": REASON, "requested_by": str(uuid.uuid4())},
    ),
    bad(
        "extra_approved_by",
        {"ticket": TICKET, "reason": REASON, "approved_by": str(uuid.uuid4())},
    ),
    bad(
        "extra_effective_at",
        {"ticket": TICKET, "reason": REASON, "effective_at": "2020-01-01T00:00:00Z"},
    ),
    bad("extra_request_id", {"ticket": TICKET, "reason": REASON, "request_id": "0"}),
]

# POST .../cancel: {"reason": 1 to 500 characters}.
CANCEL = [
    bad("missing_reason", {}),
    bad("reason_number", {"reason": 42}),
    bad("reason_array", {"reason": ["x"]}),
    bad("reason_object_ne", {"reason": NE}),
    bad("reason_null", {"reason": None}),
    bad("reason_bool", {"reason": True}),
    bad("reason_empty", {"reason": ""}),
    bad("reason_501", {"reason": "r" * 501}),
    bad("reason_100k", {"reason": LONG}, 413),
    bad("reason_100k_streamed", {"reason": LONG}, 413, streamed=True),
    bad("reason_nul", {"reason": "found it\x00"}),
    bad("reason_lone_surrogate", raw=raw_json('{"reason": "\\udbff\\udbff"}')),
    bad("extra_cancelled_by", {"reason": "found it", "cancelled_by": "account-owner"}),
    bad("extra_request_id", {"reason": "found it", "request_id": uuid.uuid4().hex}),
]

# Each list on the endpoints it is tried on.
BODIES = {
    "register": REGISTER,
    "login": LOGIN,
    "login_mfa": MFA_CASES,
    "reauthenticate": REAUTH,
    "change_password": CHANGE_PASSWORD,
    "change_email": CHANGE_EMAIL,
    "refresh": REFRESH_CASES,
    "confirm": OTP_BODY,
    "regenerate": OTP_BODY,
    "disable": DISABLE,
    "request_reset": REQUEST_RESET,
    "cancel": CANCEL,
}


# Not a JSON object ------------------------------------------------------------------

# Bodies that are not a JSON object of the endpoint's shape, for every endpoint that reads
# one (those in BODIES): what auth's endpoints are sent, what enrolment's are (None: not
# tried there), the content type, the status. On enrolment, VALID stands for the
# endpoint's valid body, serialised, and the other strings for what _not_json_body makes
# of it.
AS_JSON = "application/json"
NESTED = b"[" * 30_000 + b"]" * 30_000
MULTIPART = b"--b\r\n\r\nx\r\n--b--\r\n"
PASSWORD_JSON = f'{{"password": "{PASSWORD}"}}'.encode()
NOT_JSON: list[tuple[str, bytes | None, Any, str | None, int]] = [
    ("not_json", b"not json", b"not json", AS_JSON, 422),
    ("truncated_json", b'{"password": "' + PASSWORD.encode(), "truncated", AS_JSON, 422),
    ("empty_body", b"", b"", AS_JSON, 422),
    ("json_null", b"null", b"null", AS_JSON, 422),
    ("json_array", b"[]", b"[]", AS_JSON, 422),
    ("json_array_of_valid_body", None, "in_array", AS_JSON, 422),
    ("json_string", b'"correct horse battery staple"', b'"123456"', AS_JSON, 422),
    ("json_number", b"12345678", b"123456", AS_JSON, 422),
    ("json_true", None, b"true", AS_JSON, 422),
    ("nan", b'{"password": NaN}', "NaN", AS_JSON, 422),
    ("infinity", None, "-Infinity", AS_JSON, 422),
    ("single_quotes", None, b"{'otp': '123456'}", AS_JSON, 422),
    ("trailing_comma", None, b'{"otp": "123456",}', AS_JSON, 422),
    ("duplicate_key_object_last", None, "duplicate", AS_JSON, 422),
    ("invalid_utf8", b'{"password": "\xff\xfe\xfd"}', b'{"otp": "\xff\xfe\xfd"}', AS_JSON, 400),
    ("deeply_nested", NESTED, NESTED, AS_JSON, 400),
    (
        "body_over_64k",
        b'{"password": "' + LONG.encode() + b'"}',
        b'{"otp": "' + LONG.encode() + b'"}',
        AS_JSON,
        413,
    ),
    (
        "form_encoded",
        f"password={PASSWORD}".encode(),
        b"otp=123456&reason=x&ticket=SUP-1",
        "application/x-www-form-urlencoded",
        422,
    ),
    ("multipart", MULTIPART, MULTIPART, "multipart/form-data; boundary=b", 422),
    ("text_plain_json", PASSWORD_JSON, None, "text/plain", 422),
    ("valid_body_as_text_plain", None, VALID, "text/plain", 422),
    ("valid_body_as_xml", None, VALID, "application/xml", 422),
    ("valid_body_as_octet_stream", None, VALID, "application/octet-stream", 422),
    ("no_content_type", PASSWORD_JSON, None, None, 422),
    ("valid_body_without_content_type", None, VALID, None, 422),
    (
        "xml",
        f"<password>{PASSWORD}</password>".encode(),
        b"<otp>123456</otp>",
        "application/xml",
        422,
    ),
]


def _not_json_body(kind: Any, endpoint: Endpoint) -> bytes:
    if isinstance(kind, bytes):
        return kind
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
    raise ValueError(kind)


def _not_json_cases() -> list[Any]:
    cases = []
    for name in BODIES:
        endpoint = ENDPOINTS[name]
        for case_id, to_auth, to_enrolment, content_type, status in NOT_JSON:
            kind = to_auth if endpoint.service == "auth" else to_enrolment
            if kind is None:
                continue
            case = Bad(
                endpoint,
                None,
                raw=_not_json_body(kind, endpoint),
                content_type=content_type,
                status=(status,),
            )
            cases.append(pytest.param(case, id=f"{name}-{case_id}"))
    return cases


# Paths, tokens, roles, state, methods, headers --------------------------------------

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
    table: dict[str, list[Case]] = {}
    for case_id, value, status in ACCOUNT_IDS:
        for name in ("request_reset", "approve", "cancel", "account_status"):
            path = ENDPOINTS[name].path.replace(TARGET, value).replace(RESET_TARGET, value)
            table.setdefault(name, []).append(bad(f"account_{case_id}", status=status, path=path))
    for case_id, value, status in REQUEST_IDS:
        for name in ("approve", "cancel"):
            path = ENDPOINTS[name].path.replace(REQUEST, value)
            table[name].append(bad(f"request_{case_id}", status=status, path=path))
    table["qr_svg"] = [
        bad(f"qr_{case_id}", status=status, path=f"/v1/2fa/enrolment/qr.{value}")
        for case_id, value, status in QR_KINDS
    ]
    return matrix(table)


# Bearer tokens, each wrong in one way, on every endpoint that needs one, with a valid
# request otherwise (tests/support/bad_inputs.py forges them). On enrolment each must get
# its problem code and a Bearer challenge; auth's cases check only that the code is
# missing_token or invalid_token. The two lists are not the same: foreign_key is signed
# by another key of the same id, as foreign_key_same_kid is, but claims no more than plain
# has (aal1, no role); unknown_account names an account that does not exist.
ENROLMENT_TOKEN_KINDS: dict[str, str] = {
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
AUTH_TOKEN_KINDS = [
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


def _bearer_cases() -> list[Any]:
    cases = []
    for name, endpoint in ENDPOINTS.items():
        if not endpoint.bearer:
            continue
        if endpoint.service == "auth":
            kinds: dict[str, tuple[str, ...]] = {
                kind: ("missing_token", "invalid_token") for kind in AUTH_TOKEN_KINDS
            }
        else:
            kinds = {kind: (code,) for kind, code in ENROLMENT_TOKEN_KINDS.items()}
        for kind, codes in kinds.items():
            challenge = endpoint.service == "enrolment"
            case = Bad(endpoint, auth=kind, status=(401,), codes=codes, bearer_challenge=challenge)
            cases.append(pytest.param(case, id=f"{name}-{kind}"))
    return cases


# Who may do what: support endpoints, the owner's cancel, and refusals by state.
ROLES = {
    "request_reset": [
        bad("normal_user", status=403, auth="as:enabled", code="forbidden"),
        bad("support_at_aal1", status=403, auth="as:support_aal1", code="aal2_required"),
        bad("target_itself", status=403, auth="as:target", code="forbidden"),
    ],
    "approve": [
        bad("normal_user", status=403, auth="as:enabled", code="forbidden"),
        bad("support_at_aal1", status=403, auth="as:support_aal1", code="aal2_required"),
        bad("account_owner", status=403, auth="as:reset_target", code="forbidden"),
    ],
    "cancel": [
        bad("normal_user", status=403, auth="as:enabled", code="forbidden"),
        bad("support_at_aal1", status=403, auth="as:support_aal1", code="aal2_required"),
        # The owner has 2FA on: a password-only token of theirs is refused before anything.
        bad(
            "owner_at_aal1",
            status=401,
            auth="owner_aal1",
            code="insufficient_user_authentication",
        ),
    ],
    "account_status": [
        bad("normal_user", status=403, auth="as:enabled", code="forbidden"),
        bad("support_at_aal1", status=403, auth="as:support_aal1", code="aal2_required"),
        bad("another_account", status=403, auth="as:target", code="forbidden"),
    ],
}
STATE = {
    "start": [
        bad("stale_login", status=401, auth="stale_login", code="reauthentication_required"),
        bad("already_enabled", status=409, auth="as:enabled", code="twofa_already_enabled"),
    ],
    "qr_svg": [
        bad("nothing_pending", status=409, auth="as:plain", code="no_pending_enrolment"),
    ],
    "qr_png": [
        bad("nothing_pending", status=409, auth="as:plain", code="no_pending_enrolment"),
        bad("already_enabled", status=409, auth="as:enabled", code="twofa_already_enabled"),
    ],
    "confirm": [
        bad("nothing_pending", status=409, auth="as:plain", code="no_pending_enrolment"),
        bad("already_enabled", status=409, auth="as:enabled", code="twofa_already_enabled"),
    ],
    "regenerate": [
        bad("twofa_off", status=409, auth="as:plain", code="twofa_not_enabled"),
        bad("only_pending", status=409, auth="as:pending", code="twofa_not_enabled"),
    ],
    "disable": [
        bad("twofa_off", status=409, auth="as:plain", code="twofa_not_enabled"),
        bad(
            "twofa_off_recovery_code",
            {"recovery_code": A_CODE},
            409,
            auth="as:plain",
            code="twofa_not_enabled",
        ),
    ],
    "request_reset": [
        bad(
            "own_account",
            status=409,
            path=f"/v1/admin/accounts/{SUPPORT_A}/2fa/reset-requests",
            auth="as:support_a",
            code="not_allowed",
        ),
        bad(
            "one_already_pending",
            status=409,
            path=f"/v1/admin/accounts/{RESET_TARGET}/2fa/reset-requests",
            code="not_allowed",
        ),
        bad(
            "twofa_off",
            status=409,
            path=f"/v1/admin/accounts/{ACCOUNT}/2fa/reset-requests",  # plain's
            code="twofa_not_enabled",
        ),
    ],
    "approve": [
        bad("by_its_requester", status=409, auth="as:support_a", code="not_allowed"),
        bad(
            "of_another_account",
            status=409,
            path=f"/v1/admin/accounts/{TARGET}/2fa/reset-requests/{REQUEST}/approve",
            code="not_allowed",
        ),
    ],
    "cancel": [
        bad(
            "of_another_account",
            status=409,
            path=f"/v1/admin/accounts/{TARGET}/2fa/reset-requests/{REQUEST}/cancel",
            code="not_allowed",
        ),
    ],
}

# Auth's wrong methods carry a body of their own; enrolment's the endpoint's valid one.
PASSWORD_ONLY = {"password": PASSWORD}
WRONG_METHODS = {
    "register": [bad("get", PASSWORD_ONLY, 405, method="GET")],
    "login": [bad("put", PASSWORD_ONLY, 405, method="PUT")],
    "login_mfa": [bad("get", PASSWORD_ONLY, 405, method="GET")],
    "reauthenticate": [bad("delete", PASSWORD_ONLY, 405, method="DELETE")],
    "change_password": [bad("get", PASSWORD_ONLY, 405, method="GET")],
    "change_email": [bad("patch", PASSWORD_ONLY, 405, method="PATCH")],
    "refresh": [bad("get", PASSWORD_ONLY, 405, method="GET")],
    "logout": [bad("get", PASSWORD_ONLY, 405, method="GET")],
    "me": [bad("post", PASSWORD_ONLY, 405, method="POST")],
    "start": [bad("get", status=405, method="GET"), bad("delete", status=405, method="DELETE")],
    "qr_svg": [bad("post", status=405, method="POST")],
    "qr_png": [bad("put", status=405, method="PUT")],
    "confirm": [bad("get", status=405, method="GET")],
    "status": [bad("post", status=405, method="POST"), bad("delete", status=405, method="DELETE")],
    "regenerate": [bad("get", status=405, method="GET")],
    "disable": [bad("put", status=405, method="PUT")],
    "request_reset": [bad("get", status=405, method="GET")],
    "approve": [bad("get", status=405, method="GET")],
    "cancel": [bad("delete", status=405, method="DELETE")],
    "account_status": [
        bad("post", status=405, method="POST"),
        bad("patch", status=405, method="PATCH"),
    ],
}

# 100 KB to every enrolment endpoint, declared in Content-Length: refused before anything.
# (Auth's endpoints that read a body get body_over_64k and a 100k field each instead.)
OVERSIZED = {
    name: [bad("body_100k", None, 413, raw=LONG.encode(), code="body_too_large")]
    for name, endpoint in ENDPOINTS.items()
    if endpoint.service == "enrolment"
}
# The endpoints that read X-Request-ID (it ties the events they write together).
TRACED = ["start", "confirm", "regenerate", "disable", "request_reset", "approve", "cancel"]
REQUEST_ID_HEADERS = {
    name: [bad("x_request_id_101", status=422, headers=(("X-Request-Id", "r" * 101),))]
    for name in TRACED
}


# Tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _not_json_cases())
async def test_a_body_that_is_not_a_json_object_of_the_right_shape_is_refused(
    env: Env, case: Bad
) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(BODIES))
async def test_a_bad_request_body_is_refused(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(OVERSIZED))
async def test_a_100k_body_is_refused_before_it_is_read(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", _path_cases())
async def test_a_malformed_path_parameter_is_refused(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", _bearer_cases())
async def test_a_bad_bearer_token_is_refused(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(ROLES))
async def test_support_endpoints_need_the_role_and_the_second_factor(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(STATE))
async def test_a_request_the_state_forbids_is_refused_and_writes_nothing(
    env: Env, case: Bad
) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(REQUEST_ID_HEADERS))
async def test_an_over_long_request_id_header_is_refused(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


@pytest.mark.parametrize("case", matrix(WRONG_METHODS))
async def test_a_wrong_method_is_refused(env: Env, case: Bad) -> None:
    await assert_refused(env, case)


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


# Wrong guesses: refused, and counted like any other ---------------------------------


@dataclass(frozen=True)
class Guess:
    """A well-formed but wrong credential, sent by a user of the case's own."""

    endpoint: Endpoint
    body: Callable[[Fresh, datetime], Any]  # of the user and the time
    user: FreshKind  # the user's state (see fresh_user)
    code: str  # the problem code of the failure
    events: tuple[str, ...]  # exactly what the failure writes


PASSWORD_FAILED = ("login.failed",)
CODE_FAILED = ("twofa.otp_failed",)


def guess(
    case_id: str,
    endpoint: str,
    body: Callable[[Fresh, datetime], Any],
    code: str = "invalid_code",
    events: tuple[str, ...] = CODE_FAILED,
    *,
    user: FreshKind,
) -> Any:
    case = Guess(ENDPOINTS[endpoint], body, user, code, events)
    return pytest.param(case, id=f"{endpoint}-{case_id}")


def wrong_code(secret: str, now: datetime) -> str:
    """Six digits that are not the code of any step the window accepts."""
    live = {otp(secret, now + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "999999") if c not in live)


ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


def fullwidth_code(code: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in code)


# On auth: the password or the second factor, each failure with its own code and event.
GUESSED_CREDENTIALS = [
    guess(
        "password_sql_or",
        "login",
        lambda u, now: {"username": u.username, "password": SQL_OR},
        "invalid_credentials",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "password_sql_drop",
        "login",
        lambda u, now: {"username": u.username, "password": SQL_DROP},
        "invalid_credentials",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "password_rtl_override",
        "login",
        lambda u, now: {"username": u.username, "password": f"{RTL}{PASSWORD}"},
        "invalid_credentials",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "right_password_plus_zero_width_space",
        "login",
        lambda u, now: {"username": u.username, "password": f"{PASSWORD}{ZWSP}"},
        "invalid_credentials",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "password_emoji",
        "login",
        lambda u, now: {"username": u.username, "password": "🔐🔑🗝️🔓🔐🔑🗝️🔓"},
        "invalid_credentials",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "otp_sql_or",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "otp": SQL_OR},
        user="signing_in",
    ),
    guess(
        "right_otp_in_arabic_indic_digits",
        "login_mfa",
        lambda u, now: {
            "mfa_token": u.mfa_token,
            "otp": otp(u.secret, now).translate(ARABIC_INDIC),
        },
        user="signing_in",
    ),
    guess(
        "right_otp_in_fullwidth_digits",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "otp": otp(u.secret, now).translate(FULLWIDTH)},
        user="signing_in",
    ),
    guess(
        "right_otp_after_rtl_override",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "otp": f"{RTL}{otp(u.secret, now)}"},
        user="signing_in",
    ),
    guess(
        "right_otp_with_zero_width_space",
        "login_mfa",
        lambda u, now: {
            "mfa_token": u.mfa_token,
            "otp": f"{otp(u.secret, now)[:3]}{ZWSP}{otp(u.secret, now)[3:]}",
        },
        user="signing_in",
    ),
    guess(
        "recovery_code_sql_drop",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "recovery_code": SQL_DROP},
        user="signing_in",
    ),
    guess(
        "right_recovery_code_with_zero_width_joiner",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "recovery_code": f"{ZWJ}{u.codes[1]}"},
        user="signing_in",
    ),
    guess(
        "right_recovery_code_in_fullwidth",
        "login_mfa",
        lambda u, now: {"mfa_token": u.mfa_token, "recovery_code": fullwidth_code(u.codes[1])},
        user="signing_in",
    ),
    guess(
        "password_sql_or",
        "reauthenticate",
        lambda u, now: {"password": SQL_OR},
        "invalid_password",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "right_password_plus_zero_width_space",
        "reauthenticate",
        lambda u, now: {"password": f"{PASSWORD}{ZWSP}"},
        "invalid_password",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "right_otp_in_fullwidth_digits",
        "reauthenticate",
        lambda u, now: {"password": PASSWORD, "otp": otp(u.secret, now).translate(FULLWIDTH)},
        user="signing_in",
    ),
    guess(
        "current_sql_drop",
        "change_password",
        lambda u, now: {"current_password": SQL_DROP, "new_password": NEW_PASSWORD},
        "invalid_password",
        PASSWORD_FAILED,
        user="password_only",
    ),
    guess(
        "current_rtl_override",
        "change_email",
        lambda u, now: {"current_password": f"{RTL}{PASSWORD}", "email": ADDRESS},
        "invalid_password",
        PASSWORD_FAILED,
        user="password_only",
    ),
]

# On enrolment: the code of a pending enrolment, or of 2FA that is on.
GUESSED_CODES = [
    guess(
        "wrong_six_digits",
        "confirm",
        lambda u, now: {"otp": wrong_code(u.secret, now)},
        user="enrolling",
    ),
    guess("sql_or", "confirm", lambda u, now: {"otp": SQL_OR}, user="enrolling"),
    guess(
        "right_code_in_fullwidth_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now).translate(FULLWIDTH)},
        user="enrolling",
    ),
    guess(
        "right_code_in_arabic_indic_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now).translate(ARABIC_INDIC)},
        user="enrolling",
    ),
    guess(
        "right_code_after_rtl_override",
        "confirm",
        lambda u, now: {"otp": RTL + otp(u.secret, now)},
        user="enrolling",
    ),
    guess(
        "right_code_with_zero_width_space",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now)[:3] + ZWSP + otp(u.secret, now)[3:]},
        user="enrolling",
    ),
    guess(
        "seven_digits",
        "confirm",
        lambda u, now: {"otp": otp(u.secret, now) + "0"},
        user="enrolling",
    ),
    guess(
        "wrong_six_digits",
        "regenerate",
        lambda u, now: {"otp": wrong_code(u.secret, now)},
        user="two_factor",
    ),
    guess("sql_drop", "regenerate", lambda u, now: {"otp": SQL_DROP}, user="two_factor"),
    guess("emoji", "regenerate", lambda u, now: {"otp": "🔐🔑🔐🔑🔐🔑"}, user="two_factor"),
    guess(
        "right_code_in_fullwidth_digits",
        "regenerate",
        lambda u, now: {"otp": otp(u.secret, now).translate(FULLWIDTH)},
        user="two_factor",
    ),
    guess(
        "wrong_six_digits",
        "disable",
        lambda u, now: {"otp": wrong_code(u.secret, now)},
        user="two_factor",
    ),
    guess("otp_sql_or", "disable", lambda u, now: {"otp": SQL_OR}, user="two_factor"),
    guess(
        "wrong_recovery_code",
        "disable",
        lambda u, now: {"recovery_code": recovery.new_codes(1)[0]},
        user="two_factor",
    ),
    guess(
        "spent_recovery_code",
        "disable",
        lambda u, now: {"recovery_code": u.codes[0]},
        user="two_factor",
    ),
    guess(
        "recovery_code_sql_drop",
        "disable",
        lambda u, now: {"recovery_code": SQL_DROP},
        user="two_factor",
    ),
    guess(
        "right_recovery_code_with_zero_width_joiner",
        "disable",
        lambda u, now: {"recovery_code": ZWJ + u.codes[1]},
        user="two_factor",
    ),
    guess(
        "right_recovery_code_in_fullwidth",
        "disable",
        lambda u, now: {"recovery_code": fullwidth_code(u.codes[1])},
        user="two_factor",
    ),
    guess(
        "right_recovery_code_after_rtl_override",
        "disable",
        lambda u, now: {"recovery_code": RTL + u.codes[1]},
        user="two_factor",
    ),
]


@pytest.mark.parametrize("case", GUESSED_CREDENTIALS)
async def test_odd_but_well_formed_credentials_are_ordinary_failures(env: Env, case: Guess) -> None:
    """Not bad input but a wrong guess: 401, and only the failure the guess must count."""
    user = await fresh_user(env, case.user)
    sent = case.body(user, env.clock())
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.client(case.endpoint).post(
        case.endpoint.path, json=sent, headers=bearer(user.access_token)
    )
    assert response.status_code == 401, response.text
    assert is_problem(response) and response.json()["code"] == case.code
    assert await events_after(env, before) == list(case.events)
    submitted = values_in(sent, case.endpoint.secret_fields)
    secrets = {PASSWORD, user.access_token, user.mfa_token, *submitted}
    assert not echoed(response.text, secrets), "a submitted secret is echoed"


@pytest.mark.parametrize("case", GUESSED_CODES)
async def test_well_formed_but_wrong_codes_are_ordinary_failures(env: Env, case: Guess) -> None:
    """Not bad input but a wrong guess: 401, and exactly the failure the guess must count."""
    user = await fresh_user(env, case.user)
    sent = case.body(user, env.clock())
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.client(case.endpoint).post(
        case.endpoint.path, json=sent, headers=bearer(user.access_token)
    )
    assert response.status_code == 401, response.text
    assert is_problem(response) and response.json()["code"] == case.code
    assert response.json()["attempts_left"] == 4
    assert await events_after(env, before) == list(case.events)
    failure = await env.core.pool.fetchrow(
        "SELECT stream_id, data FROM events WHERE position > $1", before
    )
    assert failure["stream_id"] == f"twofactor-{user.account_id}"
    data = json.loads(failure["data"]) if isinstance(failure["data"], str) else failure["data"]
    purpose = {"confirm": "enrolment", "regenerate": "regenerate_codes", "disable": "disable"}
    assert data["purpose"] == purpose[case.endpoint.name] and data["consecutive_failures"] == 1
    secrets = {user.access_token, user.secret, *user.codes, *values_in(sent)}
    assert not echoed(response.text, secrets), "a submitted code or a secret is echoed"
    status = (await env.enrol.get("/v1/2fa", headers=bearer(user.access_token))).json()
    assert status["enabled"] is (case.user == "two_factor")  # the failure changed nothing else


async def test_the_fifth_wrong_code_locks_and_then_even_the_right_one_is_refused(
    env: Env,
) -> None:
    user = await fresh_user(env, "two_factor")
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


@pytest.mark.parametrize(("password", "status"), [(PASSWORD, 200), ("not the password", 401)])
async def test_a_non_ascii_device_token_is_merely_untrusted(
    env: Env, password: str, status: int
) -> None:
    username = fresh_name()
    account_id = await register(env, username)
    before = await env.core.pool.fetchval("SELECT max(position) FROM events")
    response = await env.auth.post(
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
    account_id = await register(env, username)
    tokens = await password_login(env, username)
    rotated = await env.auth.post(
        "/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    session_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    forged = f"rt1.{account_id}.{session_id}.0.{'A' * 43}"  # the public ids, a made-up secret
    before = await event_count(env.core)
    response = await env.auth.post("/v1/token/refresh", json={"refresh_token": forged})
    written = await event_count(env.core) - before
    assert response.status_code == 401 and is_problem(response)
    assert response.json()["code"] == "invalid_refresh_token"
    assert written == 0, "the forged token revoked the session"
    me = await env.auth.get("/v1/me", headers=bearer(rotated.json()["access_token"]))
    assert me.status_code == 200
