"""Consume twofa's integration events, and act only on the ones twofa really published.

An example for other teams to copy: plain aiokafka, cryptography, rfc8785 and
jsonschema, nothing of twofa's own code. For each record it prints one line,
``accepted <type> <id>`` or ``refused <reason> <partition>@<offset>``, and an accepted
event is where your own handling goes.

A record is accepted only when, in this order:

1. it carries ``ce_signature`` (standard base64) and ``ce_signaturekid`` headers, and the
   key id is one of twofa's event verify keys (``TWOFA_EVENT_VERIFY_KEYS``:
   ``kid:base64(32-byte Ed25519 public key),...``; keep every key of the ring, keys
   rotate);
2. the Ed25519 signature verifies over the RFC 8785 canonical JSON of one object: every
   CloudEvents attribute header, named without ``ce_`` (``content-type`` as
   ``datacontenttype``), and ``data``, the record's value parsed as JSON;
3. the data follows the JSON Schema whose ``$id`` its ``ce_dataschema`` names (the files
   in twofa's ``shared/schemas/events``).

Delivery is at least once: deduplicate by ``ce_id`` where your effect is recorded.

    TWOFA_EVENT_VERIFY_KEYS='e1:...' python consume_events.py \\
        --bootstrap kafka:9092 --schemas twofa/shared/schemas/events --group my-team
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rfc8785
from aiokafka import AIOKafkaConsumer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jsonschema import Draft202012Validator

# Each header that carries a CloudEvents attribute, and the attribute's name.
ATTRIBUTES = {
    "ce_id": "id",
    "ce_type": "type",
    "ce_source": "source",
    "ce_specversion": "specversion",
    "ce_time": "time",
    "ce_subject": "subject",
    "ce_dataschema": "dataschema",
    "content-type": "datacontenttype",
    "ce_sequence": "sequence",
    "ce_correlationid": "correlationid",
    "ce_causationid": "causationid",
    "ce_actor": "actor",
}


class Refused(Exception):
    """A record not to act on; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_keys(ring: str) -> dict[str, Ed25519PublicKey]:
    """``kid:base64,kid2:base64`` into public keys by id."""
    keys = {}
    for part in filter(None, (p.strip() for p in ring.split(","))):
        kid, _, encoded = part.partition(":")
        keys[kid] = Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
    return keys


def schemas(folder: Path) -> dict[str, Draft202012Validator]:
    """Every event schema in ``folder``, by its ``$id`` (what ``ce_dataschema`` names)."""
    found = {}
    for path in folder.glob("*.json"):
        schema = json.loads(path.read_text())
        found[schema["$id"]] = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    return found


def verify(
    headers: Sequence[tuple[str, bytes]],
    value: bytes | None,
    keys: dict[str, Ed25519PublicKey],
    validators: dict[str, Draft202012Validator],
) -> dict[str, Any]:
    """The event's attributes and ``data`` if the record is genuine and valid."""
    text: dict[str, str] = {}
    for name, raw in headers:
        if name in text:
            raise Refused("malformed")  # a header twice: which one was signed?
        try:
            text[name] = raw.decode()
        except UnicodeDecodeError:
            raise Refused("malformed") from None
    signature, kid = text.get("ce_signature"), text.get("ce_signaturekid")
    if not signature or not kid:
        raise Refused("unsigned")
    if kid not in keys:
        raise Refused("unknown_key")
    try:
        data = json.loads(value or b"")
        attributes = {ATTRIBUTES[h]: v for h, v in text.items() if h in ATTRIBUTES}
        # RFC 8785 reads every number as an IEEE double (as JavaScript does): so here too.
        as_doubles = json.loads(value or b"", parse_int=float)
        signed = rfc8785.dumps({**attributes, "data": as_doubles})
    except (ValueError, rfc8785.CanonicalizationError):
        raise Refused("malformed") from None
    try:
        keys[kid].verify(base64.b64decode(signature, validate=True), signed)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bad_signature") from None
    validator = validators.get(attributes.get("dataschema", ""))
    if validator is None or not isinstance(data, dict) or not validator.is_valid(data):
        # No schema: a type newer than your copy of the schemas; update it to accept it.
        raise Refused("schema_invalid")
    return {**attributes, "data": data}


async def consume(args: argparse.Namespace) -> None:
    keys = verify_keys(os.environ["TWOFA_EVENT_VERIFY_KEYS"])
    validators = schemas(Path(args.schemas))
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    await consumer.start()
    seen = 0
    try:
        while args.max_records is None or seen < args.max_records:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    seen += 1
                    try:
                        event = verify(record.headers, record.value, keys, validators)
                    except Refused as refused:  # set it aside; never act on it
                        print(f"refused {refused.reason} {record.partition}@{record.offset}")
                        continue
                    print(f"accepted {event['type']} {event['id']}")  # your handling here
            if batches:
                await consumer.commit()  # after the handling: at least once
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="twofa.events.v1")
    parser.add_argument("--group", default="example-consumer")
    parser.add_argument("--schemas", default="shared/schemas/events")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=500)
    parser.add_argument("--max-records", type=int, help="stop after this many records")
    asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    main()
