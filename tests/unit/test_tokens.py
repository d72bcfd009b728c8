"""Ed25519 JWTs: issuing, verifying, refusing forgeries and garbage, rotating keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from shared.security.keys import SigningKeys
from shared.security.tokens import Claims, TokenError, TokenIssuer, TokenVerifier

ISSUER = "https://auth.twofa.test"
AUDIENCE = "portal"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def verifier(
    keys: SigningKeys, *, is_revoked: Callable[[str], bool] = lambda sid: False
) -> TokenVerifier:
    return TokenVerifier(
        keys.public_keys(), issuer=ISSUER, audience=AUDIENCE, is_revoked=is_revoked
    )


def access_token(keys: SigningKeys, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "subject": str(uuid.uuid4()),
        "audience": AUDIENCE,
        "session_id": str(uuid.uuid4()),
        "auth_time": NOW - timedelta(seconds=5),
        "amr": ("pwd", "otp"),
        "acr": "aal2",
        "roles": ("partner",),
        "now": NOW,
    }
    arguments.update(overrides)
    return TokenIssuer(keys, issuer=ISSUER).issue_access(**arguments)


def mfa_token(keys: SigningKeys) -> str:
    return TokenIssuer(keys, issuer=ISSUER).issue_mfa(
        subject=str(uuid.uuid4()), challenge_id=str(uuid.uuid4()), audience=AUDIENCE, now=NOW
    )


def refusal(verify: Callable[..., Claims], token: str, now: datetime | None = NOW) -> TokenError:
    """The ``TokenError`` that ``verify`` raises for ``token``."""
    with pytest.raises(TokenError) as caught:
        verify(token, now=now)
    return caught.value


def test_access_token_round_trips_every_claim() -> None:
    keys = SigningKeys.generate("k1")
    subject, session = str(uuid.uuid4()), str(uuid.uuid4())
    token = TokenIssuer(keys, issuer=ISSUER).issue_access(
        subject=subject,
        audience=AUDIENCE,
        session_id=session,
        auth_time=NOW - timedelta(seconds=5),
        amr=["pwd", "otp"],
        acr="aal2",
        roles=["partner", "admin"],
        now=NOW,
    )
    claims = verifier(keys).verify_access(token, now=NOW)
    stamp = int(NOW.timestamp())
    assert claims == Claims(
        iss=ISSUER,
        sub=subject,
        aud=AUDIENCE,
        sid=session,
        iat=stamp,
        exp=stamp + 15 * 60,
        auth_time=stamp - 5,
        amr=("pwd", "otp"),
        acr="aal2",
        roles=("partner", "admin"),
        jti=claims.jti,
        typ="access",
    )
    assert len(claims.jti) >= 16
    assert jwt.get_unverified_header(token) == {"alg": "Ed25519", "kid": "k1", "typ": "at+jwt"}


def test_access_token_verifies_against_the_real_clock() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys, now=datetime.now(UTC))
    assert verifier(keys).verify_access(token).acr == "aal2"


def test_each_token_has_its_own_jti() -> None:
    keys = SigningKeys.generate("k1")
    check = verifier(keys)
    first = check.verify_access(access_token(keys), now=NOW)
    second = check.verify_access(access_token(keys), now=NOW)
    assert first.jti != second.jti


def test_mfa_token_carries_the_challenge_and_no_roles() -> None:
    keys = SigningKeys.generate("k1")
    subject, challenge = str(uuid.uuid4()), str(uuid.uuid4())
    token = TokenIssuer(keys, issuer=ISSUER).issue_mfa(
        subject=subject, challenge_id=challenge, audience=AUDIENCE, now=NOW
    )
    claims = verifier(keys).verify_mfa(token, now=NOW)
    stamp = int(NOW.timestamp())
    assert claims == Claims(
        iss=ISSUER,
        sub=subject,
        aud=AUDIENCE,
        sid="",
        iat=stamp,
        exp=stamp + 5 * 60,
        auth_time=stamp,
        amr=("pwd",),
        acr="aal1",
        roles=(),
        jti=challenge,
        typ="mfa",
    )
    assert jwt.get_unverified_header(token)["typ"] == "mfa+jwt"


def test_token_for_several_audiences_verifies_for_each() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys, audience=[AUDIENCE, "admin-console"])
    for audience in (AUDIENCE, "admin-console"):
        check = TokenVerifier(keys.public_keys(), issuer=ISSUER, audience=audience)
        assert check.verify_access(token, now=NOW).aud == audience


def test_expired_token_is_refused_after_the_leeway() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys)
    check = verifier(keys)
    expiry = NOW + timedelta(minutes=15)
    assert check.verify_access(token, now=expiry + timedelta(seconds=29)).sub
    error = refusal(check.verify_access, token, now=expiry + timedelta(seconds=30))
    assert error.reason == "expired"
    assert token not in str(error)


def test_expired_mfa_token_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    later = NOW + timedelta(minutes=6)
    assert refusal(verifier(keys).verify_mfa, mfa_token(keys), now=later).reason == "expired"


def test_token_issued_in_the_future_is_refused_beyond_the_leeway() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys)
    check = verifier(keys)
    assert check.verify_access(token, now=NOW - timedelta(seconds=30)).sub
    error = refusal(check.verify_access, token, now=NOW - timedelta(seconds=31))
    assert error.reason == "not_yet_valid"


def test_token_for_another_audience_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys, audience="billing")
    assert refusal(verifier(keys).verify_access, token).reason == "wrong_audience"


def test_token_from_another_issuer_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    token = TokenIssuer(keys, issuer="https://evil.test").issue_mfa(
        subject="a", challenge_id="c", audience=AUDIENCE, now=NOW
    )
    assert refusal(verifier(keys).verify_mfa, token).reason == "wrong_issuer"


def test_tampered_payload_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    header, payload, signature = access_token(keys).split(".")
    claims = json.loads(unb64url(payload))
    claims["roles"] = ["admin"]
    forged = ".".join((header, segment(claims), signature))
    assert refusal(verifier(keys).verify_access, forged).reason == "bad_signature"


def test_token_signed_by_a_foreign_key_with_a_known_kid_is_refused() -> None:
    ours, theirs = SigningKeys.generate("k1"), SigningKeys.generate("k1")
    token = access_token(theirs)
    assert refusal(verifier(ours).verify_access, token).reason == "bad_signature"


def test_token_with_an_unknown_kid_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(SigningKeys.generate("k9"))
    error = refusal(verifier(keys).verify_access, token)
    assert error.reason == "unknown_key"
    assert "'k9'" in str(error)


@pytest.mark.parametrize("signature", ["", "AAAA"])
def test_alg_none_token_is_refused(signature: str) -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    header = segment({"alg": "none", "typ": "at+jwt", "kid": "k1"})
    unsigned = f"{header}.{payload}.{signature}"
    assert refusal(verifier(keys).verify_access, unsigned).reason == "alg_not_allowed"


def public_key_as(form: str, keys: SigningKeys) -> bytes:
    public = keys.public_keys()[keys.active_kid]
    if form == "raw":
        return public.public_bytes_raw()
    if form == "jwk-x":
        return str(keys.public_jwks()["keys"][0]["x"]).encode()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("form", ["raw", "jwk-x", "pem"])
def test_hs256_token_keyed_with_the_public_key_is_refused(form: str) -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    header = segment({"alg": "HS256", "typ": "at+jwt", "kid": "k1"})
    secret = public_key_as(form, keys)
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64url(mac)}"
    assert refusal(verifier(keys).verify_access, forged).reason == "alg_not_allowed"


def test_rs256_token_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        json.loads(unb64url(payload)),
        rsa_key,
        algorithm="RS256",
        headers={"kid": "k1", "typ": "at+jwt"},
    )
    assert refusal(verifier(keys).verify_access, forged).reason == "alg_not_allowed"


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "at+jwt", "kid": "k1"},
        {"alg": "ES256", "typ": "at+jwt", "kid": "k1"},
        {"alg": "eddsa", "typ": "at+jwt", "kid": "k1"},
        {"alg": ["EdDSA"], "typ": "at+jwt", "kid": "k1"},
        {"alg": "ed25519", "typ": "at+jwt", "kid": "k1"},
        {"alg": "Ed448", "typ": "at+jwt", "kid": "k1"},
    ],
)
def test_any_other_alg_header_is_refused(header: dict[str, Any]) -> None:
    keys = SigningKeys.generate("k1")
    _, payload, signature = access_token(keys).split(".")
    forged = f"{segment(header)}.{payload}.{signature}"
    assert refusal(verifier(keys).verify_access, forged).reason == "alg_not_allowed"


def test_mfa_token_is_not_an_access_token() -> None:
    keys = SigningKeys.generate("k1")
    error = refusal(verifier(keys).verify_access, mfa_token(keys))
    assert error.reason == "wrong_type"


def test_access_token_is_not_an_mfa_token() -> None:
    keys = SigningKeys.generate("k1")
    error = refusal(verifier(keys).verify_mfa, access_token(keys))
    assert error.reason == "wrong_type"


def test_header_typ_and_claim_typ_must_agree() -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    relabelled = keys.sign(json.loads(unb64url(payload)), typ="mfa+jwt")
    assert refusal(verifier(keys).verify_mfa, relabelled).reason == "wrong_type"


def test_media_type_form_of_typ_is_accepted() -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    token = keys.sign(json.loads(unb64url(payload)), typ="application/AT+JWT")
    assert verifier(keys).verify_access(token, now=NOW).typ == "access"


def test_token_of_a_revoked_session_is_refused() -> None:
    keys = SigningKeys.generate("k1")
    revoked = str(uuid.uuid4())
    check = verifier(keys, is_revoked=lambda sid: sid == revoked)
    assert check.verify_access(access_token(keys), now=NOW).sid != revoked
    error = refusal(check.verify_access, access_token(keys, session_id=revoked))
    assert error.reason == "revoked"


def test_mfa_tokens_do_not_consult_session_revocation() -> None:
    keys = SigningKeys.generate("k1")
    check = verifier(keys, is_revoked=lambda sid: True)
    assert check.verify_mfa(mfa_token(keys), now=NOW).typ == "mfa"


def test_token_from_an_old_key_verifies_after_rotation() -> None:
    before = SigningKeys.generate("2030-01")
    old_token = access_token(before)
    fresh = SigningKeys.generate("2030-02")
    after = SigningKeys.from_config(f"{before.to_config()},{fresh.to_config()}", "2030-02")
    jwks = after.public_jwks()
    assert [(key["kid"], key["alg"]) for key in jwks["keys"]] == [
        ("2030-01", "Ed25519"),
        ("2030-01", "EdDSA"),
        ("2030-02", "Ed25519"),
        ("2030-02", "EdDSA"),
    ]
    check = TokenVerifier.from_jwks(jwks, issuer=ISSUER, audience=AUDIENCE)
    assert check.verify_access(old_token, now=NOW).sub
    new_token = access_token(after)
    assert jwt.get_unverified_header(new_token)["kid"] == "2030-02"
    assert check.verify_access(new_token, now=NOW).sub


def test_jwks_publishes_rfc8037_okp_keys() -> None:
    keys = SigningKeys.generate("k1")
    current, legacy = keys.public_jwks()["keys"]  # RFC 9864's name, then the deprecated one
    for jwk, alg in ((current, "Ed25519"), (legacy, "EdDSA")):
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["use"], jwk["alg"]) == (
            "OKP",
            "Ed25519",
            "k1",
            "sig",
            alg,
        )
        assert unb64url(jwk["x"]) == keys.public_keys()["k1"].public_bytes_raw()
        assert "=" not in jwk["x"]
        assert "d" not in jwk


def test_a_token_signed_as_eddsa_before_the_switch_still_verifies() -> None:
    keys = SigningKeys.generate("k1")
    issued = access_token(keys)
    _, payload, _ = issued.split(".")
    legacy_header = segment({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"})
    signing_input = f"{legacy_header}.{payload}".encode()
    seed = base64.b64decode(keys.to_config().partition(":")[2])
    private = Ed25519PrivateKey.from_private_bytes(seed)
    legacy = f"{legacy_header}.{payload}.{b64url(private.sign(signing_input))}"
    assert (
        verifier(keys).verify_access(legacy, now=NOW).sub
        == verifier(keys).verify_access(issued, now=NOW).sub
    )
    check = TokenVerifier.from_jwks(keys.public_jwks(), issuer=ISSUER, audience=AUDIENCE)
    assert check.verify_access(legacy, now=NOW).sub


def test_a_jwks_naming_two_keys_by_one_kid_is_refused() -> None:
    one, other = SigningKeys.generate("k1").public_jwks(), SigningKeys.generate("k1").public_jwks()
    with pytest.raises(ValueError, match="names two different keys"):
        TokenVerifier.from_jwks(
            {"keys": [one["keys"][0], other["keys"][0]]}, issuer=ISSUER, audience=AUDIENCE
        )


def test_verifier_takes_a_jwks_and_ignores_keys_that_are_not_ed25519() -> None:
    keys = SigningKeys.generate("k1")
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_public))
    jwks = {
        "keys": [
            {**rsa_jwk, "kid": "rsa"},
            {"kty": "OKP", "crv": "X25519", "x": "A" * 43, "kid": "x25519"},
            {"kty": "EC", "crv": "P-256", "x": "A", "y": "B", "kid": "ec"},
            *keys.public_jwks()["keys"],
        ]
    }
    check = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    assert check.verify_access(access_token(keys), now=NOW).sub
    rsa_signed = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "rsa"})
    assert refusal(check.verify_access, rsa_signed).reason == "alg_not_allowed"


def test_jwks_without_ed25519_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="no Ed25519"):
        TokenVerifier.from_jwks({"keys": []}, issuer=ISSUER, audience=AUDIENCE)


def test_config_round_trips() -> None:
    keys = SigningKeys.from_config(
        f"{SigningKeys.generate('a').to_config()}, {SigningKeys.generate('b').to_config()}", "a"
    )
    again = SigningKeys.from_config(keys.to_config(), "a")
    assert again.active_kid == "a"
    assert again.public_jwks() == keys.public_jwks()
    assert SigningKeys.from_config(SigningKeys.generate("solo").to_config(), None).active_kid == (
        "solo"
    )


SEED = base64.b64encode(b"\x07" * 32).decode()
SHORT = base64.b64encode(b"\x07" * 16).decode()


@pytest.mark.parametrize(
    ("raw", "active", "named"),
    [
        (f"k1:{SEED[:-3]}!!", None, "'k1' is not valid base64"),
        (f"k1:{SHORT}", None, "'k1' must be a 32-byte"),
        (f"k1:{SEED},k1:{SEED}", "k1", "'k1' appears twice"),
        (f"k1:{SEED},k2:{SEED}", None, "must be named"),
        (f"k1:{SEED}", "k2", "'k2' is not in the ring"),
        (SEED, None, "#1 must look like 'kid:base64seed'"),
        (f"k1:{SEED},:{SEED}", "k1", "#2 must look like"),
        ("", None, "no signing key"),
        (f"bad kid:{SEED}", None, "'bad kid' must be"),
    ],
)
def test_bad_config_is_refused_without_showing_key_material(
    raw: str, active: str | None, named: str
) -> None:
    with pytest.raises(ValueError) as caught:
        SigningKeys.from_config(raw, active)
    message = str(caught.value)
    assert named in message
    for material in (SEED, SEED[:-3], SHORT, SEED[:12], SHORT[:12]):
        assert material not in message
    assert caught.value.__cause__ is None


def test_signing_keys_repr_shows_no_key_material() -> None:
    keys = SigningKeys.generate("k1")
    assert repr(keys) == "SigningKeys(active_kid='k1', kids=['k1'])"


def test_naive_datetimes_are_refused_when_issuing() -> None:
    keys = SigningKeys.generate("k1")
    with pytest.raises(ValueError, match="timezone-aware"):
        access_token(keys, now=datetime(2030, 1, 1))


HUGE_NUMBER_HEADER = b'{"alg": "EdDSA", "kid": ' + b"9" * 5000 + b"}"
GOOD_HEADER = segment({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"})


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "a",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "..",
        "a..c",
        ".b.c",
        "x" * 10_240,
        "a." + "b" * 10_240 + ".c",
        "ünïcødé.tökén.sïgnätürë",
        "\ud800.\udfff.\x00",
        "eyJ\n.eyJ.AAAA",
        "Bearer abc.def.ghi",
        "abcde.abcde.abcde",
        f"{b64url(b'not json')}.{segment({})}.AAAA",
        f"{b64url(bytes(range(256)))}.{segment({})}.AAAA",
        f"{segment([1, 2, 3])}.{segment({})}.AAAA",
        f"{segment('EdDSA')}.{segment({})}.AAAA",
        f"{segment(None)}.{segment({})}.AAAA",
        f"{b64url(b'[' * 3000)}.{segment({})}.AAAA",
        f"{b64url(HUGE_NUMBER_HEADER)}.{segment({})}.AAAA",
        f"{segment({'alg': 'EdDSA', 'typ': 'at+jwt', 'kid': 'k1', 'crit': ['exp']})}"
        f".{segment({})}.AAAA",
        f"{segment({'alg': 'EdDSA', 'typ': 'at+jwt', 'kid': 'k1', 'b64': False})}"
        f".{segment({})}.AAAA",
        f"{GOOD_HEADER}.{segment({})}.AAAA",
        f"{GOOD_HEADER}.{b64url(b'not json')}.AAAA",
        f"{GOOD_HEADER}.{segment({})}.",
        f"{GOOD_HEADER}.{segment({})}.A",
    ],
)
def test_garbage_is_refused_with_token_error_only(token: str) -> None:
    keys = SigningKeys.generate("k1")
    check = verifier(keys)
    for verify in (check.verify_access, check.verify_mfa):
        error = refusal(verify, token)
        # A well-formed header gets as far as the signature, or the typ check for MFA.
        assert error.reason in {"malformed", "bad_signature", "wrong_type"}
        if len(token.strip()) > 1:
            assert token not in str(error)
            assert token not in repr(error)


def test_genuine_token_over_8_kib_is_refused_up_front() -> None:
    keys = SigningKeys.generate("k1")
    token = access_token(keys, roles=[secrets.token_hex(8) for _ in range(500)])
    assert len(token) > 8 * 1024
    assert refusal(verifier(keys).verify_access, token).reason == "malformed"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iat", "1893499200"),
        ("iat", 1893499200.5),
        ("exp", True),
        ("auth_time", None),
        ("amr", "pwd"),
        ("amr", ["pwd", 1]),
        ("roles", {"admin": True}),
        ("acr", "aal3"),
        ("sid", ""),
        ("sub", 42),
        ("jti", ["x"]),
        ("typ", None),
    ],
)
def test_signed_claims_of_the_wrong_type_are_refused(claim: str, value: Any) -> None:
    keys = SigningKeys.generate("k1")
    _, payload, _ = access_token(keys).split(".")
    claims = json.loads(unb64url(payload))
    if value is None:
        del claims[claim]
    else:
        claims[claim] = value
    token = keys.sign(claims, typ="at+jwt")
    assert refusal(verifier(keys).verify_access, token).reason in {
        "malformed",
        "wrong_type",
    }


@given(st.text(max_size=400))
def test_any_text_is_refused_with_token_error_only(token: str) -> None:
    keys = SigningKeys.generate("k1")
    with pytest.raises(TokenError):
        verifier(keys).verify_access(token)


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=100))
def test_any_three_segments_are_refused_with_token_error_only(
    header: bytes, payload: bytes, signature: bytes
) -> None:
    keys = SigningKeys.generate("k1")
    token = ".".join(b64url(part) for part in (header, payload, signature))
    with pytest.raises(TokenError):
        verifier(keys).verify_access(token)
