"""The README's consumer example, run as another team would run it, against the broker:
it accepts what the relay signs and refuses every forgery, with the reason."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import os
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import ATTRIBUTES, EventSigner
from shared.security.keys import SigningKeys
from tests.support.samples import sample_event
from tests.unit.test_event_schemas import recorded

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "consume_events.py"


def public(type_name: str) -> IntegrationEvent:
    event = PUBLIC_EVENTS.to_integration(recorded(sample_event(type_name)))
    assert event is not None
    return event


async def test_the_consumer_example_accepts_genuine_events_and_refuses_forged_ones(
    kafka_bootstrap: str, topic: str, event_keys: SigningKeys
) -> None:
    relay = EventSigner(event_keys)  # what the relay of this test signs with
    genuine = [public(t) for t in ("account.registered", "twofa.enabled", "session.revoked")]
    approved = public("twofa.reset_approved")
    invalid = dataclasses.replace(approved, id=uuid.uuid4(), data={"x": 1e16, "y": -0.0})
    altered = relay.sign(approved)
    stranger = EventSigner(SigningKeys.generate(event_keys.active_kid))  # same kid, other key
    forged = [  # every forgery tried, with the reason it must be refused for
        ("unsigned", approved.headers(), approved.body()),
        ("bad_signature", stranger.sign(approved).headers, approved.body()),
        ("bad_signature", altered.headers, altered.value.replace(b"approved_by", b"approved_bx")),
        ("schema_invalid", relay.sign(invalid).headers, relay.sign(invalid).value),
        ("unknown_key", EventSigner(SigningKeys.generate("other")).sign(approved).headers, b"{}"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for event in genuine:
            record = relay.sign(event)
            await producer.send_and_wait(topic, record.value, key=event.key, headers=record.headers)
        for _, headers, value in forged:
            await producer.send_and_wait(topic, value, key=b"attacker", headers=headers)
    finally:
        await producer.stop()

    total = len(genuine) + len(forged)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *("--bootstrap", kafka_bootstrap, "--topic", topic, "--group", f"ex-{uuid.uuid4().hex}"),
        *("--schemas", str(ROOT / "shared" / "schemas" / "events")),
        *("--fetch-max-wait-ms", "10", "--max-records", str(total)),
        env={**os.environ, "TWOFA_EVENT_VERIFY_KEYS": event_keys.public_config()},
        cwd=ROOT / "docs" / "examples",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    accepted = sorted(line.split()[2] for line in lines if line.startswith("accepted "))
    refused = Counter(line.split()[1] for line in lines if line.startswith("refused "))
    assert accepted == sorted(str(e.id) for e in genuine)
    assert refused == Counter(reason for reason, _, _ in forged)
    assert len(lines) == total


def test_the_consumer_example_needs_nothing_of_twofa() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported <= {
        *sys.stdlib_module_names,
        "aiokafka",
        "cryptography",
        "rfc8785",
        "jsonschema",
    }


def test_the_consumer_example_signs_over_the_attributes_twofa_signs() -> None:
    spec = importlib.util.spec_from_file_location("consume_events", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.ATTRIBUTES == ATTRIBUTES
