"""Signed integration events: the relay signs every record, every consumer checks it first.

What is signed is the RFC 8785 (JCS) canonical JSON of one object: each CloudEvents
attribute the record carries, under its CloudEvents name and as the text of its header
(``id``, ``type``, ``source``, ``specversion``, ``time``, ``subject``, ``dataschema``,
``datacontenttype`` from ``content-type``, ``sequence``, ``correlationid``,
``causationid``, ``actor``), and ``data``. The record's value is the RFC 8785 form of the
data itself, so what a consumer stores is exactly what was signed. Ed25519 under the
relay's active key; the signature (standard base64) and its key id travel as the headers
``ce_signature`` and ``ce_signaturekid``. Keys rotate like the token keys: the relay signs
with one key of its ring, consumers accept every key of theirs.

``EventVerifier.check`` refuses a record (``RefusedEvent``, with a ``reason``) before it
can have any effect, in this order:

- ``unsigned``: no signature or key id header;
- ``unknown_key``: a key id the consumer has no key for;
- ``bad_signature``: the signature does not match (an attribute or the value altered,
  a value that is not its data's canonical form);
- ``malformed``: not a CloudEvents record of a JSON object (checked only once the bytes
  are known to be the relay's);
- ``schema_invalid``: a type with no schema, a ``dataschema`` that is not its schema's,
  or data its JSON Schema (``shared/schemas/events``) refuses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import Counter

from shared.messaging.integration import IntegrationEvent, MalformedEventError
from shared.security.canonical import canonical
from shared.security.keys import SigningKeys

__all__ = [
    "KID_HEADER",
    "REASONS",
    "REFUSED",
    "SIGNATURE_HEADER",
    "EventSigner",
    "EventVerifier",
    "RefusedEvent",
    "SignedRecord",
    "signing_input",
]

SIGNATURE_HEADER: Final = "ce_signature"
KID_HEADER: Final = "ce_signaturekid"
REASONS: Final = ("unsigned", "unknown_key", "bad_signature", "malformed", "schema_invalid")

# The signed attributes, by CloudEvents name; each travels as the header ``ce_<name>``
# but for ``datacontenttype`` (``content-type``, as the Kafka binding has it).
SIGNED_ATTRIBUTES: Final = (
    *("id", "type", "source", "specversion", "time", "subject", "dataschema"),
    *("datacontenttype", "sequence", "correlationid", "causationid", "actor"),
)
ATTRIBUTES: Final = {
    ("content-type" if name == "datacontenttype" else f"ce_{name}"): name
    for name in SIGNED_ATTRIBUTES
}

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "events"

REFUSED = Counter(
    "twofa_consumer_refused_events",
    "Records refused before any effect (and sent to the DLQ), by consumer and reason",
    ["consumer", "reason"],
)


class RefusedEvent(MalformedEventError):
    """A record no consumer may act on; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A Kafka record's value and headers, signed."""

    value: bytes
    headers: list[tuple[str, bytes]]


def signing_input(headers: Mapping[str, str], value: bytes) -> bytes:
    """The bytes the signature covers: the canonical JSON of the attributes and the data.

    ``value`` must be the canonical form of the data (the relay writes it so); it is
    spliced in as it is, so a value that is not canonical changes the bytes and fails.
    """
    attributes = {ATTRIBUTES[h]: text for h, text in headers.items() if h in ATTRIBUTES}
    # The only unescaped '"data":""' in the canonical text is the key itself.
    return canonical({**attributes, "data": ""}).replace(b'"data":""', b'"data":' + value, 1)


class EventSigner:
    """Signs integration events with the active key of an Ed25519 ring."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys

    def sign(self, event: IntegrationEvent) -> SignedRecord:
        value = event.body()
        headers = event.headers()
        text = {name: raw.decode() for name, raw in headers}
        signature = self.keys.sign_bytes(signing_input(text, value))
        headers += [
            (SIGNATURE_HEADER, base64.b64encode(signature)),
            (KID_HEADER, self.keys.active_kid.encode()),
        ]
        return SignedRecord(value, headers)


class EventVerifier:
    """Checks a record's signature, then its data's schema; ``check`` gives the event."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self.keys = dict(keys)

    def check(self, headers: Sequence[tuple[str, bytes]], value: bytes | None) -> IntegrationEvent:
        """The event of a genuine, valid record; ``RefusedEvent`` for anything else."""
        text = _text_headers(headers)
        signature, kid = text.get(SIGNATURE_HEADER), text.get(KID_HEADER)
        if not signature or not kid:
            raise RefusedEvent("unsigned", "no ce_signature or ce_signaturekid header")
        key = self.keys.get(kid)
        if key is None:
            raise RefusedEvent("unknown_key", f"no verify key with id {kid[:64]!r}")
        if value is None:
            raise RefusedEvent("malformed", "empty body")
        try:
            key.verify(base64.b64decode(signature, validate=True), signing_input(text, value))
        except (InvalidSignature, binascii.Error, ValueError):
            raise RefusedEvent("bad_signature", f"signature does not match key {kid!r}") from None
        try:
            event = IntegrationEvent.from_kafka(headers, value)
        except MalformedEventError as exc:
            raise RefusedEvent("malformed", str(exc)) from None
        _check_schema(event)
        return event


def _text_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    text: dict[str, str] = {}
    for name, raw in headers:
        if name in text:  # which of the two would have been signed?
            raise RefusedEvent("malformed", f"header {name[:64]!r} appears twice")
        try:
            text[name] = raw.decode()
        except (UnicodeDecodeError, AttributeError):
            raise RefusedEvent("malformed", "headers are not UTF-8 text") from None
    return text


def _check_schema(event: IntegrationEvent) -> None:
    schema_id, validator = _validators().get(event.type, (None, None))
    if validator is None:
        raise RefusedEvent("schema_invalid", f"no schema for type {event.type[:100]!r}")
    if event.dataschema != schema_id:
        raise RefusedEvent("schema_invalid", f"dataschema is not {schema_id}")
    error = next(validator.iter_errors(event.data), None)
    if error is not None:
        # The path and the keyword only: the message would quote the (refused) value.
        where = "/".join(str(part) for part in error.instance_path) or "(root)"
        raise RefusedEvent("schema_invalid", f"data at {where} fails {event.type} schema")


@functools.cache
def _validators() -> dict[str, tuple[str, Any]]:
    """Each public type's schema id and compiled validator (formats checked too), once."""
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        found[schema["title"]] = (
            schema["$id"],
            jsonschema_rs.validator_for(schema, validate_formats=True),
        )
    return found
