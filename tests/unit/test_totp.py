"""TOTP codes, the acceptance window, input normalisation and the Key URI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.security.totp import code_at, match_step, new_secret, provisioning_uri, time_step
from tests.support.totp import otp

# The ASCII key "12345678901234567890" used by RFC 4226 and RFC 6238, in base32.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
AT = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def at_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def eight_digit_code(secret: str, step: int) -> str:
    """The RFC 6238 vectors are 8 digits; only this helper configures pyotp that way."""
    return pyotp.TOTP(secret, digits=8).generate_otp(step)


# RFC 6238 Appendix B, SHA-1 rows.
@pytest.mark.parametrize(
    ("unix", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_sha1_vectors(unix: int, expected: str) -> None:
    step = time_step(at_unix(unix))
    assert eight_digit_code(RFC_SECRET, step) == expected
    assert code_at(RFC_SECRET, step) == expected[-6:]


# RFC 4226 Appendix D: HOTP values for counters 0..9 (a TOTP is a HOTP of the step).
RFC4226_CODES = ["755224", "287082", "359152", "969429", "338314"]
RFC4226_CODES += ["254676", "287922", "162583", "399871", "520489"]


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_CODES)))
def test_rfc4226_hotp_vectors(counter: int, expected: str) -> None:
    assert code_at(RFC_SECRET, counter) == expected


@pytest.mark.parametrize("offset_seconds", [0, 1, 29, 30, 31, 3600, 86_400 * 365])
def test_codes_agree_with_an_independent_implementation(offset_seconds: int) -> None:
    secret = new_secret()
    at = AT + timedelta(seconds=offset_seconds)
    assert code_at(secret, time_step(at)) == otp(secret, at)


def test_time_step_is_unix_seconds_over_30() -> None:
    assert time_step(at_unix(0)) == 0
    assert time_step(at_unix(29)) == 0
    assert time_step(at_unix(30)) == 1
    assert time_step(at_unix(1_700_000_000)) == 1_700_000_000 // 30


def test_time_step_honours_the_timezone() -> None:
    cet = timezone(timedelta(hours=1))
    assert time_step(AT.astimezone(cet)) == time_step(AT)


def test_time_step_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        time_step(datetime(2026, 1, 1))


def test_current_code_matches_its_step() -> None:
    secret = new_secret()
    step = time_step(AT)
    assert match_step(secret, code_at(secret, step), AT) == step


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_neighbouring_steps_are_accepted_with_window_1(delta: int) -> None:
    secret = new_secret()
    step = time_step(AT) + delta
    assert match_step(secret, code_at(secret, step), AT, window=1) == step


@pytest.mark.parametrize("delta", [-3, -2, 2, 3])
def test_steps_outside_the_window_are_refused(delta: int) -> None:
    # A fixed secret and instant: a random one's codes could (rarely) collide.
    code = code_at(RFC_SECRET, time_step(AT) + delta)
    assert code not in {code_at(RFC_SECRET, time_step(AT) + d) for d in (-1, 0, 1)}
    assert match_step(RFC_SECRET, code, AT, window=1) is None


@pytest.mark.parametrize("delta", [-1, 1])
def test_window_0_accepts_only_the_exact_step(delta: int) -> None:
    step = time_step(AT)
    assert match_step(RFC_SECRET, code_at(RFC_SECRET, step), AT, window=0) == step
    neighbour = code_at(RFC_SECRET, step + delta)
    assert neighbour != code_at(RFC_SECRET, step)
    assert match_step(RFC_SECRET, neighbour, AT, window=0) is None


def test_negative_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="window"):
        match_step(new_secret(), "123456", AT, window=-1)


def test_code_for_another_secret_is_refused() -> None:
    other = base64.b32encode(b"another twenty bytes").decode()
    code = code_at(other, time_step(AT))
    assert code != code_at(RFC_SECRET, time_step(AT))
    assert match_step(RFC_SECRET, code, AT, window=0) is None


@pytest.mark.parametrize(
    "spelling",
    [
        "{a}{b}",
        " {a}{b} ",
        "{a} {b}",
        "\t{a}\u00a0{b}\n",  # a non-breaking space, as some apps copy it
        "{a[0]}{a[1]} {a[2]}{b[0]} {b[1]}{b[2]}",
    ],
)
def test_surrounding_and_inner_whitespace_is_ignored(spelling: str) -> None:
    secret = new_secret()
    step = time_step(AT)
    code = code_at(secret, step)
    typed = spelling.format(a=code[:3], b=code[3:])
    assert match_step(secret, typed, AT) == step


MALFORMED_CODES = [
    "",
    " ",
    "12345",
    "1234567",
    "abcdef",
    "12345a",
    "123-456",
    "+12345",
    "-12345",
    "1e5000",
    "١٢٣٤٥٦",  # Arabic-Indic digits: str.isdigit() says yes, we say no
    "۱۲۳۴۵۶",  # Extended Arabic-Indic
    "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
    "\uff1123456",
    "None",
    "null",
    "undefined",
    "NaN",
    "0" * 10_000,
    "1" * 1_000_000,
    "123456" + " " * 100,  # too long before normalisation, refused without work
    "' OR '1'='1",
    "123456'; DROP TABLE events; --",
    "123456\x00",
    "\ud800\ud800\ud800\ud800\ud800\ud800",
]


@pytest.mark.parametrize("code", MALFORMED_CODES)
def test_malformed_codes_are_refused(code: str) -> None:
    assert match_step(RFC_SECRET, code, AT) is None


def test_code_with_spaces_inside_is_accepted_after_they_are_removed() -> None:
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    at = at_unix(59)
    assert code_at(secret, time_step(at)) == "287082"
    assert match_step(secret, "28 70 82", at, window=0) == time_step(at)
    assert match_step(secret, "12 34 56", at, window=0) is None


@given(st.text())
def test_match_step_never_raises_on_any_text(code: str) -> None:
    result = match_step(RFC_SECRET, code, AT)
    assert result is None or abs(result - time_step(AT)) <= 1


def test_new_secret_is_32_base32_chars_of_160_bits() -> None:
    secret = new_secret()
    assert len(secret) == 32
    assert "=" not in secret
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert len(base64.b32decode(secret)) == 20


def test_new_secret_differs_each_call() -> None:
    assert len({new_secret() for _ in range(100)}) == 100


def test_new_secret_is_accepted_by_pyotp_as_an_app_would_use_it() -> None:
    secret = new_secret()
    assert pyotp.TOTP(secret).at(AT) == code_at(secret, time_step(AT))


def parse_uri(uri: str) -> tuple[str, str, dict[str, list[str]]]:
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    encoded_issuer, colon, encoded_account = parts.path.removeprefix("/").partition(":")
    assert colon == ":"
    return unquote(encoded_issuer), unquote(encoded_account), parse_qs(parts.query)


@pytest.mark.parametrize(
    ("issuer", "account"),
    [
        ("twofa", "alice"),
        ("Acme Corp", "alice@example.com"),
        ("Acme: Staging", "team:alice"),
        ("Zoë Müller GmbH", "Zoë Müller"),
        ("例え", "ユーザー@例え.jp"),
        ("a&b=c?d#e/f", "100% sure+plus"),
    ],
)
def test_provisioning_uri_round_trips(issuer: str, account: str) -> None:
    secret = new_secret()
    uri = provisioning_uri(secret, issuer=issuer, account=account)
    parsed_issuer, parsed_account, query = parse_uri(uri)
    assert (parsed_issuer, parsed_account) == (issuer, account)
    assert query == {
        "secret": [secret],
        "issuer": [issuer],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


def test_provisioning_uri_percent_encodes_the_label() -> None:
    uri = provisioning_uri(RFC_SECRET, issuer="Acme Corp", account="zoë@example.com:1")
    assert uri.startswith("otpauth://totp/Acme%20Corp:zo%C3%AB%40example.com%3A1?")
    assert uri.isascii()
    assert " " not in uri and "+" not in uri


def test_provisioning_uri_is_read_back_by_pyotp() -> None:
    secret = new_secret()
    uri = provisioning_uri(secret, issuer="Acme Corp", account="alice@example.com")
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == secret
    assert parsed.issuer == "Acme Corp"
    assert parsed.name == "alice@example.com"
    assert parsed.at(AT) == code_at(secret, time_step(AT))


@pytest.mark.parametrize(("issuer", "account"), [("", "alice"), ("twofa", "")])
def test_provisioning_uri_refuses_an_empty_issuer_or_account(issuer: str, account: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        provisioning_uri(RFC_SECRET, issuer=issuer, account=account)
