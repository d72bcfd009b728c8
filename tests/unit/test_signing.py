"""Signed events: what the relay signs verifies, every forgery is refused by name, and the
fast canonical form is RFC 8785's."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import rfc8785

from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import (
    ATTRIBUTES,
    KID_HEADER,
    SIGNATURE_HEADER,
    EventSigner,
    EventVerifier,
    RefusedEvent,
    signing_input,
)
from shared.security.canonical import canonical
from shared.security.keys import SigningKeys
from tests.support.samples import sample_event
from tests.unit.test_event_schemas import recorded

KEYS = SigningKeys.generate("relay-2026")
SIGNER = EventSigner(KEYS)
VERIFIER = EventVerifier(KEYS.public_keys())

Headers = list[tuple[str, bytes]]


def sample(type_name: str = "twofa.reset_approved") -> IntegrationEvent:
    public = PUBLIC_EVENTS.to_integration(recorded(sample_event(type_name)))
    assert public is not None
    return public


def signed_raw(headers: Headers, value: bytes, keys: SigningKeys = KEYS) -> Headers:
    """``headers`` and ``value`` signed as they are, by ``keys``: a relay that went wrong."""
    text = {k: v.decode() for k, v in headers if k not in (SIGNATURE_HEADER, KID_HEADER)}
    signature = keys.sign_bytes(signing_input(text, value))
    kept = [(k, v) for k, v in headers if k not in (SIGNATURE_HEADER, KID_HEADER)]
    return [
        *kept,
        (SIGNATURE_HEADER, base64.b64encode(signature)),
        (KID_HEADER, keys.active_kid.encode()),
    ]


def replaced(headers: Headers, name: str, value: bytes) -> Headers:
    return [(k, value if k == name else v) for k, v in headers]


def test_the_relay_form_verifies_and_is_the_canonical_of_attributes_and_data() -> None:
    event = dataclasses.replace(
        sample(), data={**sample().data, "request_id": 'é ☃ \u2028 "q" \\ '}
    )
    record = SIGNER.sign(event)
    assert record.value == rfc8785.dumps(event.data)
    text = {k: v.decode() for k, v in record.headers}
    whole = {ATTRIBUTES[k]: v for k, v in text.items() if k in ATTRIBUTES}
    assert {"id", "type", "time", "datacontenttype", "sequence", "causationid", "actor"} <= set(
        whole
    )
    signed_bytes = rfc8785.dumps({**whole, "data": event.data})  # the plain recipe
    assert signing_input(text, record.value) == signed_bytes
    KEYS.public_keys()["relay-2026"].verify(base64.b64decode(text[SIGNATURE_HEADER]), signed_bytes)
    assert text[KID_HEADER] == "relay-2026"
    assert VERIFIER.check(record.headers, record.value) == event


def test_every_published_type_verifies() -> None:
    for public_type in sorted(PUBLIC_EVENTS.mapped_types()):
        public = PUBLIC_EVENTS.to_integration(recorded(sample_event(public_type)))
        if public is None:
            continue  # internal: never published
        record = SIGNER.sign(public)
        assert VERIFIER.check(record.headers, record.value) == public, public_type


def test_every_key_of_the_ring_verifies_so_keys_rotate() -> None:
    old, new = SigningKeys.generate("relay-2025"), SigningKeys.generate("relay-2026b")
    verifier = EventVerifier({**old.public_keys(), **new.public_keys()})
    for keys in (old, new):
        record = EventSigner(keys).sign(sample())
        assert verifier.check(record.headers, record.value).type == "twofa.reset_approved"
    with pytest.raises(RefusedEvent, match="unknown_key"):  # a key dropped from the ring
        record = EventSigner(old).sign(sample())
        EventVerifier(new.public_keys()).check(record.headers, record.value)


def _forgeries() -> list[tuple[str, str, Callable[[], tuple[Headers, bytes | None]]]]:
    """(what, reason, the record): every bad record the verifier is tried with."""
    event = sample()
    good = SIGNER.sign(event)
    headers, value = good.headers, good.value
    unsigned = event.headers()
    stranger = SigningKeys.generate("relay-2026")  # the right key id, another key
    invalid = {"x": 1e16, "y": -0.0}
    cases: list[tuple[str, str, Callable[[], tuple[Headers, bytes | None]]]] = [
        ("no signature headers", "unsigned", lambda: (unsigned, value)),
        ("no key id", "unsigned", lambda: ([h for h in headers if h[0] != KID_HEADER], value)),
        ("empty signature", "unsigned", lambda: (replaced(headers, SIGNATURE_HEADER, b""), value)),
        ("no headers at all", "unsigned", lambda: ([], b"not an event")),
        ("unknown key id", "unknown_key", lambda: (replaced(headers, KID_HEADER, b"k9"), value)),
        (
            "signed by another ring",
            "unknown_key",
            lambda: (EventSigner(SigningKeys.generate("attacker")).sign(event).headers, value),
        ),
        (
            "same kid, another key",
            "bad_signature",
            lambda: (signed_raw(unsigned, value, stranger), value),
        ),
        (
            "data altered",
            "bad_signature",
            lambda: (headers, value.replace(b'"request_id":"', b'"request_id":"0')),
        ),
        (
            "data reordered",
            "bad_signature",
            lambda: (headers, orjson.dumps(dict(reversed(event.data.items())))),
        ),
        ("same data, spaced", "bad_signature", lambda: (headers, value.replace(b",", b", "))),
        (
            "signature not base64",
            "bad_signature",
            lambda: (replaced(headers, SIGNATURE_HEADER, b"!!"), value),
        ),
        (
            "signature cut short",
            "bad_signature",
            lambda: (
                replaced(headers, SIGNATURE_HEADER, dict(headers)[SIGNATURE_HEADER][:40]),
                value,
            ),
        ),
        ("empty body", "malformed", lambda: (headers, None)),
        ("signed broken JSON", "malformed", lambda: (signed_raw(unsigned, b"{broken"), b"{broken")),
        ("signed JSON array", "malformed", lambda: (signed_raw(unsigned, b"[1,2]"), b"[1,2]")),
        ("header twice", "malformed", lambda: ([*headers, ("ce_type", b"session.revoked")], value)),
        ("header not UTF-8", "malformed", lambda: ([*headers, ("x-bin", b"\xff\xfe")], value)),
        (
            "signed, missing ce_id",
            "malformed",
            lambda: (signed_raw([h for h in unsigned if h[0] != "ce_id"], value), value),
        ),
        (
            "signed, schema-invalid data",
            "schema_invalid",
            lambda: (signed_raw(unsigned, rfc8785.dumps(invalid)), rfc8785.dumps(invalid)),
        ),
        (
            "signed, date-time without offset",
            "schema_invalid",
            lambda: _signed_data({**event.data, "effective_at": "2026-11-28T12:00:00"}),
        ),
        (
            "signed, an extra field",
            "schema_invalid",
            lambda: _signed_data({**event.data, "totp_secret": "JBSWY3DPEHPK3PXP"}),
        ),
        (
            "signed, unknown type",
            "schema_invalid",
            lambda: (signed_raw(replaced(unsigned, "ce_type", b"account.poison"), value), value),
        ),
        (
            "signed, another type's schema",
            "schema_invalid",
            lambda: (
                signed_raw(
                    replaced(unsigned, "ce_dataschema", b"urn:twofa:event:login.failed:v1"), value
                ),
                value,
            ),
        ),
    ]
    for header, _ in unsigned:  # each attribute, altered after signing
        cases.append((f"{header} altered", "bad_signature", _altered(headers, header, value)))
    return cases


def _altered(
    headers: Headers, header: str, value: bytes
) -> Callable[[], tuple[Headers, bytes | None]]:
    return lambda: (replaced(headers, header, b"x"), value)


def _signed_data(data: dict[str, Any]) -> tuple[Headers, bytes]:
    value = rfc8785.dumps(data)
    return signed_raw(sample().headers(), value), value


FORGERIES = _forgeries()


@pytest.mark.parametrize(("what", "reason", "record"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_a_forged_or_invalid_record_is_refused_with_its_reason(
    what: str, reason: str, record: Callable[[], tuple[Headers, bytes | None]]
) -> None:
    headers, value = record()
    with pytest.raises(RefusedEvent) as refused:
        VERIFIER.check(headers, value)
    assert refused.value.reason == reason, what
    assert str(refused.value).startswith(f"{reason}: ")


def test_refusals_do_not_quote_the_data() -> None:
    secret = "JBSWY3DPEHPK3PXP"
    headers, value = _signed_data({**sample().data, "totp_secret": secret})
    with pytest.raises(RefusedEvent) as refused:
        VERIFIER.check(headers, value)
    assert secret not in str(refused.value)


# The fast canonical form is RFC 8785's, byte for byte (any JSON: test_audit_chain.py) ---


def test_orjson_escapes_every_code_point_as_rfc_8785_does() -> None:
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(points), 4096):
        text = "".join(map(chr, points[start : start + 4096]))
        assert canonical(text) == rfc8785.dumps(text), hex(points[start])
        assert orjson.dumps(text) == rfc8785.dumps(text), hex(points[start])
