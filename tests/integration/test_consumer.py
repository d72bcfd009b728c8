"""The consumer loop against real PostgreSQL and Kafka: once per event id, DLQ, shutdown,
and no effect from a record the relay did not sign."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from shared.devtools.servers import free_port
from shared.messaging.consumer import ConsumerOptions, Delivery, EventConsumer, Handler
from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import EventSigner, EventVerifier
from shared.security.keys import SigningKeys
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.settings import event_signer, signed

pytestmark = pytest.mark.integration


def integration_event(kind: str = "login.failed", account: str | None = None) -> IntegrationEvent:
    return IntegrationEvent(
        id=uuid.uuid4(),
        type=kind,
        source="/twofa/account",
        subject=account or str(uuid.uuid4()),
        time=datetime.now(UTC),
        data={"reason": "password", "consecutive_failures": 1, "trusted_device": False},
        dataschema=f"urn:twofa:event:{kind}:v1",
        sequence=1,
    )


async def publish(
    bootstrap: str, topic: str, records: list[tuple[list[tuple[str, bytes]], bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for headers, value in records:
            await producer.send_and_wait(topic, value, key=b"k", headers=headers)
    finally:
        await producer.stop()


def wire(event: IntegrationEvent) -> tuple[list[tuple[str, bytes]], bytes]:
    """``event`` signed as this test's relay would publish it."""
    record = signed(event)
    return record.headers, record.value


def verifier() -> EventVerifier:
    return EventVerifier(event_signer().keys.public_keys())


@pytest.fixture
async def seen_table(pool: asyncpg.Pool) -> str:
    # No unique key on purpose: a second effect of one event would show as a second row.
    await pool.execute("CREATE TABLE seen (event_id uuid NOT NULL, type text NOT NULL)")
    return "seen"


async def record_seen(
    conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
) -> None:
    await conn.execute("INSERT INTO seen (event_id, type) VALUES ($1, $2)", event.id, event.type)


@contextlib.asynccontextmanager
async def consuming(
    pool: asyncpg.Pool, bootstrap: str, topic: str, handler: Handler, name: str
) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(
        pool=pool,
        bootstrap_servers=bootstrap,
        handler=handler,
        verifier=verifier(),
        options=ConsumerOptions(
            name=name, topics=(topic,), dlq_topic=topic + ".dlq", retry_seconds=0.05
        ),
    )
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # graceful: commits and leaves the group


async def seen_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM seen"))


async def test_redelivered_events_have_no_second_effect(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic: str, seen_table: str
) -> None:
    events = [integration_event() for _ in range(5)]
    # Each event is on the topic twice, as an at-least-once relay may leave it.
    await publish(kafka_bootstrap, topic, [wire(e) for e in events] * 2)
    group = f"test-{uuid.uuid4().hex[:8]}"
    async with consuming(pool, kafka_bootstrap, topic, record_seen, group):
        await eventually(lambda: _processed(pool, group, 5))
        await eventually(lambda: _committed(kafka_bootstrap, topic, group, 10))
    assert await seen_count(pool) == 5

    # Rewind the group to the beginning: everything is redelivered, nothing happens twice.
    await _rewind(kafka_bootstrap, topic, group)
    async with consuming(pool, kafka_bootstrap, topic, record_seen, group):
        await eventually(lambda: _committed(kafka_bootstrap, topic, group, 10))
    assert await seen_count(pool) == 5
    rows = await pool.fetch("SELECT DISTINCT event_id FROM seen")
    assert {r["event_id"] for r in rows} == {e.id for e in events}


def forged(good: IntegrationEvent, account: str) -> list[tuple[str, tuple[list[Any], bytes]]]:
    """Records no relay signed, each with the reason a consumer must refuse it for."""
    headers, value = wire(good)
    stranger = EventSigner(SigningKeys.generate("test-events"))  # right kid, wrong key
    elsewhere = EventSigner(SigningKeys.generate("attacker-1"))
    invalid = dataclasses.replace(good, id=uuid.uuid4(), data={"x": 1e16, "y": -0.0})
    unknown = dataclasses.replace(good, id=uuid.uuid4(), type="account.poison")
    other = [(k, account.encode() if k == "ce_subject" else v) for k, v in headers]
    return [
        ("unsigned", ([], b"not an event")),  # no headers, not JSON
        ("unsigned", (good.headers(), good.body())),  # right headers, no signature
        ("bad_signature", (headers, b"{broken")),  # right headers, broken body
        ("bad_signature", (headers, value.replace(b"password", b"recovery"))),
        ("bad_signature", (headers, value.replace(b":", b": "))),  # same data, not canonical
        ("bad_signature", (other, value)),  # an attribute altered
        ("bad_signature", (_as_tuple(stranger.sign(good)))),
        ("unknown_key", (_as_tuple(elsewhere.sign(good)))),
        ("schema_invalid", wire(invalid)),
        ("schema_invalid", wire(unknown)),  # a type with no schema
        ("malformed", ([*headers, ("ce_id", b"again")], value)),  # a header twice
    ]


def _as_tuple(record: Any) -> tuple[list[tuple[str, bytes]], bytes]:
    return record.headers, record.value


def refused(consumer: str, reason: str) -> float:
    labels = {"consumer": consumer, "reason": reason}
    return REGISTRY.get_sample_value("twofa_consumer_refused_events_total", labels) or 0.0


async def test_refused_and_failing_events_go_to_the_dlq_and_the_loop_goes_on(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic: str, seen_table: str
) -> None:
    poison = integration_event()
    good = [integration_event() for _ in range(3)]
    bad = forged(good[0], str(uuid.uuid4()))

    async def handler(
        conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
    ) -> None:
        await record_seen(conn, event, delivery)
        if event.id == poison.id:
            raise ValueError("cannot handle this one")

    records = [record for _, record in bad] + [wire(e) for e in [good[0], poison, *good[1:]]]
    await publish(kafka_bootstrap, topic, records)
    group = f"test-{uuid.uuid4().hex[:8]}"
    async with consuming(pool, kafka_bootstrap, topic, handler, group):
        await eventually(lambda: _committed(kafka_bootstrap, topic, group, len(records)))
    rows = await pool.fetch("SELECT event_id FROM seen")
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in good)  # once each
    processed = await pool.fetch("SELECT event_id FROM processed_events")
    assert sorted(r["event_id"] for r in processed) == sorted(e.id for e in good)
    dead = await read_topic(kafka_bootstrap, topic + ".dlq", until=lambda r: len(r) > len(bad))
    reasons = [dict(r.headers)["dlq_reason"].decode() for r in dead]
    assert reasons == [reason for reason, _ in bad] + ["handler_failed"]
    assert [r.value for r in dead] == [record[1] for _, record in bad] + [poison.body()]
    errors = [dict(r.headers)["dlq_error"].decode() for r in dead]
    assert "ValueError: cannot handle this one" in errors[-1]
    assert all(dict(r.headers)["dlq_consumer"] == group.encode() for r in dead)
    for reason in {reason for reason, _ in bad}:
        assert refused(group, reason) == sum(1 for r, _ in bad if r == reason), reason


async def test_an_outage_is_waited_out_not_dead_lettered(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic: str, seen_table: str
) -> None:
    attempts = 0

    async def flaky(conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionResetError("database went away")
        await record_seen(conn, event, delivery)

    event = integration_event()
    await publish(kafka_bootstrap, topic, [wire(event)])
    group = f"test-{uuid.uuid4().hex[:8]}"
    async with consuming(pool, kafka_bootstrap, topic, flaky, group):
        await eventually(lambda: _committed(kafka_bootstrap, topic, group, 1))
    assert attempts == 3
    assert await seen_count(pool) == 1


async def _processed(pool: asyncpg.Pool, consumer: str, n: int) -> bool:
    got = await pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = $1", consumer)
    return bool(got >= n)


async def _committed(bootstrap: str, topic: str, group: str, total: int) -> bool:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        offsets = 0
        for p in parts:
            committed = await consumer.committed(TopicPartition(topic, p))
            offsets += committed or 0
        return offsets >= total
    finally:
        await consumer.stop()


async def _rewind(bootstrap: str, topic: str, group: str) -> None:
    """Join the group and commit offset 0 everywhere, as an operator's reset would."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await eventually(lambda: bool(consumer.assignment()) or consumer.getmany(timeout_ms=100))
        await consumer.commit({tp: 0 for tp in consumer.assignment()})
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def forwarding(port: int, target: str) -> AsyncIterator[None]:
    """Port ``port`` on 127.0.0.1 forwards to ``target`` (host:port) while the block runs."""
    host, _, target_port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with await asyncio.start_server(forward, "127.0.0.1", port):
        yield


async def test_a_broker_unreachable_at_start_is_waited_for_not_given_up(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic: str, seen_table: str
) -> None:
    """Regression: a service started while the broker was away lost its consumer for
    good (the task ended with KafkaConnectionError, logged only at shutdown)."""
    port = free_port()  # nothing listens here yet: the broker is "down"
    consumer = EventConsumer(
        pool=pool,
        bootstrap_servers=f"127.0.0.1:{port}",
        handler=record_seen,
        verifier=verifier(),
        options=ConsumerOptions(
            name=f"test-{uuid.uuid4().hex[:8]}",
            topics=(topic,),
            dlq_topic=topic + ".dlq",
            retry_seconds=0.05,
        ),
    )
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, started))
    try:
        await asyncio.sleep(3)  # several failed connection attempts
        assert not task.done(), task.exception() if task.done() else None
        assert not started.is_set()
        events = [integration_event() for _ in range(3)]
        await publish(kafka_bootstrap, topic, [wire(e) for e in events])
        async with forwarding(port, kafka_bootstrap):  # the broker is back
            await asyncio.wait_for(started.wait(), 30)
            await eventually(lambda: _seen(pool, 3))

    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await seen_count(pool) == 3


async def _seen(pool: asyncpg.Pool, n: int) -> bool:
    return await seen_count(pool) == n
