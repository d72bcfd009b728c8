"""The outbox relay against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from shared.domain.contract import PUBLIC_EVENTS
from shared.domain.events import REGISTRY, AccountRegistered, EmailChanged, PasswordChanged
from shared.events import NewEvent
from shared.eventstore import EventStore
from shared.integration import IntegrationMap, Publish
from shared.notify import Notifier
from shared.relay import Relay, RelayOptions
from tests.kafka_helpers import event_ids, eventually, read_topic
from tests.samples import SECRET_MARKERS

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool, REGISTRY, notifier=Notifier(pool))


def make_relay(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str, **options: float
) -> Relay:
    return Relay(
        dsn=database_url,
        store=store,
        mapping=PUBLIC_EVENTS,
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic, **options),  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def register(store: EventStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        account = str(uuid.uuid4())
        new = [
            NewEvent(
                AccountRegistered(
                    username=f"user{i}",
                    email=f"user{i}@example.org",
                    password_hash=SECRET_MARKERS["password_hash"],  # type: ignore[arg-type]
                )
            ),
            NewEvent(PasswordChanged(password_hash=SECRET_MARKERS["password_hash"])),  # type: ignore[arg-type]
        ]
        await store.append(f"account-{account}", new, 0)
        ids += [str(e.event_id) for e in new]
    return ids


async def test_relay_publishes_every_event_once_with_headers_and_no_secret(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    # Polling every 60 s: only the writers' NOTIFY can get the events out within 20 s.
    relay = make_relay(database_url, store, kafka_bootstrap, topic, poll_interval=60.0)
    async with running(relay):
        await eventually(lambda: relay.is_active)
        ids = await register(store, 10)
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 20, within=20)
    assert sorted(event_ids(records)) == sorted(ids)
    for record in records:
        headers = dict(record.headers)
        assert headers["ce_specversion"] == b"1.0"
        assert headers["content-type"] == b"application/json"
        assert record.key == headers["ce_subject"]
        assert record.value is not None
        assert str(SECRET_MARKERS["password_hash"]).encode() not in record.value
        body = orjson.loads(record.value)
        assert "password_hash" not in body
    # One account's events share a key, so a partition, in stream order.
    by_key: dict[bytes, list[bytes]] = {}
    for record in records:
        assert record.key is not None
        by_key.setdefault(record.key, []).append(dict(record.headers)["ce_type"])
    assert all(t == [b"account.registered", b"account.password_changed"] for t in by_key.values())
    checkpoint = await store.pool.fetchrow(
        "SELECT position FROM relay_checkpoints WHERE name = $1", topic
    )
    assert checkpoint is not None
    assert checkpoint["position"] == await store.pool.fetchval("SELECT max(position) FROM events")


async def test_relay_resumes_from_its_checkpoint(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    first = await register(store, 3)
    async with running(make_relay(database_url, store, kafka_bootstrap, topic)):
        await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 6)
    second = await register(store, 2)
    async with running(make_relay(database_url, store, kafka_bootstrap, topic)):
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 10)
    assert sorted(event_ids(records)) == sorted(first + second)


async def test_two_relays_one_active_each_event_once_and_failover(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    a = make_relay(database_url, store, kafka_bootstrap, topic, standby_retry=0.2)
    b = make_relay(database_url, store, kafka_bootstrap, topic, standby_retry=0.2)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    task_b = asyncio.create_task(b.run(stop_b))
    try:
        await eventually(lambda: a.is_active or b.is_active)
        assert not (a.is_active and b.is_active)
        ids = await register(store, 25)
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 50)
        assert sorted(event_ids(records)) == sorted(ids)  # each once, none doubled

        # The active one dies: the standby takes over within seconds.
        active, standby = (a, b) if a.is_active else (b, a)
        (stop_a if active is a else stop_b).set()
        await asyncio.wait_for(task_a if active is a else task_b, 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(lambda: standby.is_active, within=10)
        assert loop.time() - started < 5
        more = await register(store, 5)
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 60)
        assert sorted(event_ids(records)) == sorted(ids + more)
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 15)


async def test_unmapped_event_stops_the_relay_instead_of_leaking(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    only_registration = IntegrationMap(
        {"account.registered": Publish("account.registered", ("username",))}
    )
    relay = Relay(
        dsn=database_url,
        store=store,
        mapping=only_registration,
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic),
    )
    await store.append(
        f"account-{uuid.uuid4()}",
        [NewEvent(EmailChanged(email="new@example.org", previous_email="old@example.org"))],
        0,
    )
    from shared.integration import UnmappedEventError

    with pytest.raises(UnmappedEventError):
        await asyncio.wait_for(relay.run(asyncio.Event()), 15)
    assert await store.pool.fetchval("SELECT count(*) FROM relay_checkpoints") == 0
