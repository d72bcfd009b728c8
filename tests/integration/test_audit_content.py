"""Audit hashes what it stores (issue 14): raw records with values PostgreSQL's jsonb would
normalise go through Kafka, the consumer and the log, and still verify; entries recorded
before migration 0007 verify the old way."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.audit import usecases
from services.audit.adapters import log_store
from services.audit.domain.chain import GENESIS, Entry, legacy_content, link
from services.audit.main import create_app
from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import KID_HEADER, SIGNATURE_HEADER, signing_input
from shared.platform.db import MIGRATIONS_DIR, create_pool, migrate
from tests.support.apps import client_for
from tests.support.audit import issue
from tests.support.clock import Clock
from tests.support.database import admin_sql
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.servers import with_database
from tests.support.settings import event_signer, settings_for, with_kafka

pytestmark = pytest.mark.integration

REGULAR = b'"reason":"password","trusted_device":false'

# Each body as it arrives on Kafka, byte for byte (a login.failed with an odd value), and
# the data its stored bytes then hold, in canonical form: what the API must show.
ODD_BODIES: list[tuple[str, bytes, bytes]] = [
    ("1e16", b'{"consecutive_failures":1e16,' + REGULAR + b"}", b"10000000000000000"),
    ("2**53", b'{"consecutive_failures":9007199254740992,' + REGULAR + b"}", b"9007199254740992"),
    ("1.0", b'{"consecutive_failures":1.0,' + REGULAR + b"}", b"1"),
    ("1E+2", b'{"consecutive_failures":1E+2,' + REGULAR + b"}", b"100"),
    ("\\u00e9", rb'{"consecutive_failures":1,"reason":"caf\u00e9","trusted_device":false}', b"1"),
    (
        "\\ud83d\\ude00",
        rb'{"consecutive_failures":1,"reason":"\ud83d\ude00","trusted_device":false}',
        b"1",
    ),
    ("\\u2028", rb'{"consecutive_failures":1,"reason":"a\u2028b","trusted_device":false}', b"1"),
    ('\\"', rb'{"consecutive_failures":1,"reason":"say \"hi\"","trusted_device":false}', b"1"),
    (
        "duplicate keys",
        b'{"consecutive_failures":1,"consecutive_failures":2,' + REGULAR + b"}",
        b"2",
    ),
]
# What the reason of each body above reads as, once parsed (and so in the stored bytes).
REASONS = {
    "\\u00e9": "caf\u00e9",
    "\\ud83d\\ude00": "\U0001f600",
    "\\u2028": "a\u2028b",
    '\\"': 'say "hi"',
}

# Bodies that never reach the log, each with the DLQ reason: what RFC 8785 cannot write
# (audit refuses it: handler_failed), what is not JSON (malformed) and what the event's
# schema refuses (a count that is not an integer: 1.5e-7, and -0.0, a float's sign; their
# canonical forms, "1.5e-7" and "0", are tested in tests/unit/test_audit_chain.py).
REFUSED_BODIES: list[tuple[str, bytes, bytes]] = [
    ("2**53 + 1", b'{"consecutive_failures":9007199254740993,' + REGULAR + b"}", b"handler_failed"),
    (
        "lone surrogate",
        rb'{"consecutive_failures":1,"reason":"\ud800","trusted_device":false}',
        b"malformed",
    ),
    ("1e400", b'{"consecutive_failures":1e400,' + REGULAR + b"}", b"malformed"),
    ("NaN", b'{"consecutive_failures":NaN,' + REGULAR + b"}", b"malformed"),
    ("1.5e-7", b'{"consecutive_failures":1.5e-7,' + REGULAR + b"}", b"schema_invalid"),
    ("-0.0", b'{"consecutive_failures":-0.0,' + REGULAR + b"}", b"schema_invalid"),
]


async def produce_record(
    producer: AIOKafkaProducer, topic: str, event: IntegrationEvent, body: bytes
) -> None:
    """Put ``event`` on ``topic`` as the relay would, its body exactly ``body``, signed
    with this test's event key (the signature covers the body's bytes as they are)."""
    headers = event.headers()
    keys = event_signer().keys
    signature = keys.sign_bytes(signing_input({k: v.decode() for k, v in headers}, body))
    headers += [
        (SIGNATURE_HEADER, base64.b64encode(signature)),
        (KID_HEADER, keys.active_kid.encode()),
    ]
    await producer.send_and_wait(topic, body, key=event.key, headers=headers)


def login_failed(account: str, position: int) -> IntegrationEvent:
    return IntegrationEvent(
        id=uuid.uuid4(),
        type="login.failed",
        source="/twofa/account",
        subject=account,
        time=datetime.now(UTC),
        data={},  # the body is sent as given, not from here
        dataschema="urn:twofa:event:login.failed:v1",
        sequence=position,
        actor="anonymous",
    )


@pytest.fixture
async def audit_client(
    database_url: str, kafka_bootstrap: str, topic: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = settings_for(database_url, **with_kafka(kafka_bootstrap, topic))
    clock = Clock()
    async with client_for(create_app(settings, clock=clock)) as client:
        yield client, {"Authorization": f"Bearer {issue(settings, clock)}"}


async def test_stored_bytes_are_what_is_hashed_whatever_jsonb_would_make_of_them(
    audit_client: tuple[httpx.AsyncClient, dict[str, str]],
    pool: asyncpg.Pool,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    client, bearer = audit_client
    account = str(uuid.uuid4())
    sent: dict[str, IntegrationEvent] = {}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        cases = [(name, body) for name, body, _ in ODD_BODIES + REFUSED_BODIES]
        for position, (name, body) in enumerate(cases, start=1):
            sent[name] = login_failed(account, position)
            await produce_record(producer, topic, sent[name], body)
    finally:
        await producer.stop()
    dead = await read_topic(
        kafka_bootstrap, topic + ".dlq", until=lambda r: len(r) >= len(REFUSED_BODIES)
    )

    async def all_stored() -> bool:
        count = await pool.fetchval("SELECT count(*) FROM audit.entries")
        return bool(count >= len(ODD_BODIES))

    await eventually(all_stored, within=30)
    assert sorted(r.value for r in dead if r.value) == sorted(b for _, b, _ in REFUSED_BODIES)
    letters = {dict(r.headers)["ce_id"]: dict(r.headers) for r in dead}
    for name, _, reason in REFUSED_BODIES:
        assert letters[str(sent[name].id).encode()]["dlq_reason"] == reason, name
    assert letters[str(sent["2**53 + 1"].id).encode()]["dlq_error"].startswith(
        b"NotCanonicalError: "
    )

    verified = (await client.get("/v1/audit/verify", headers=bearer)).json()
    assert verified["ok"] is True and verified["entries"] == len(ODD_BODIES), verified
    items = (await client.get("/v1/audit/events", headers=bearer)).json()["items"]
    shown = {item["event_id"]: item for item in items}
    for name, _, failures in ODD_BODIES:
        row = await pool.fetchrow(
            "SELECT content, data, hash, prev_hash FROM audit.entries WHERE event_id = $1",
            sent[name].id,
        )
        assert row is not None, name
        content = bytes(row["content"])
        reason = orjson.dumps(REASONS.get(name, "password"))
        data = b'{"consecutive_failures":' + failures + b',"reason":' + reason
        data += b',"trusted_device":false}'
        assert b'"data":' + data + b"," in content, (name, content)
        assert row["data"] is None  # no jsonb copy
        assert bytes(row["hash"]) == link(bytes(row["prev_hash"]), content)
        item = shown[str(sent[name].id)]
        assert item["data"] == orjson.loads(content)["data"] == orjson.loads(data), name


async def test_entries_recorded_before_0007_still_verify_beside_new_ones(
    postgres_url: str, tmp_path: Path
) -> None:
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0007":
            shutil.copy(path, earlier / path.name)
    name = f"twofa_legacy_{uuid.uuid4().hex[:10]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        url = with_database(postgres_url, name)
        await migrate(url, earlier)
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await _legacy_story(pool, url)
        finally:
            await pool.close()
    finally:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _legacy_story(pool: asyncpg.Pool, url: str) -> None:
    account = str(uuid.uuid4())
    old = Entry(
        event_id=uuid.uuid4(),
        chain=account,
        chain_seq=1,
        event_type="login.failed",
        source="/twofa/account",
        actor="anonymous",
        correlation_id=None,
        causation_id=None,
        occurred_at=datetime.now(UTC),
        store_position=1,
        dataschema="urn:twofa:event:login.failed:v1",
        data={"reason": "password", "consecutive_failures": 1, "trusted_device": False},
    )
    old_hash = link(GENESIS, legacy_content(old))
    # As the code before 0007 wrote it: the data as jsonb, the hash over the columns.
    await pool.execute(
        """INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source, actor,
               occurred_at, store_position, dataschema, data, prev_hash, hash)
           VALUES ($1, $2, 1, $3, $4, $5, $6, 1, $7, $8, $9, $10)""",
        old.event_id,
        account,
        old.event_type,
        old.source,
        old.actor,
        old.occurred_at,
        old.dataschema,
        old.data,
        GENESIS,
        old_hash,
    )
    assert "0007_audit_content" in await migrate(url)
    new = IntegrationEvent(
        id=uuid.uuid4(),
        type="login.failed",
        source="/twofa/account",
        subject=account,
        time=datetime.now(UTC),
        data={"reason": "password", "consecutive_failures": 2, "trusted_device": False},
        dataschema="urn:twofa:event:login.failed:v1",
        sequence=2,
        actor="anonymous",
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await usecases.record(conn, new)
    report = await usecases.verify(pool)
    assert (report["ok"], report["entries"], report["chains"]) == (True, 2, 1), report
    rows = await log_store.page(pool, log_store.Filters(account=account), 0, 10)
    shown = [log_store.row_to_json(r) for r in rows]
    assert [i["data"]["consecutive_failures"] for i in shown] == [1, 2]
    assert shown[1]["prev_hash"] == old_hash.hex()
    # From 0007 on, no entry may be written the old way.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            """INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source,
                   occurred_at, store_position, dataschema, data, prev_hash, hash)
               VALUES ($1, $2, 3, 'x', 'x', now(), 3, 'x', '{}', $3, $3)""",
            uuid.uuid4(),
            account,
            GENESIS,
        )
