"""The outbox relay against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.domain.events import AccountRegistered, EmailChanged, PasswordChanged
from shared.eventstore.envelope import NewEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging import relay as relay_module
from shared.messaging.integration import IntegrationMap, Publish
from shared.messaging.kafka import ensure_topics
from shared.messaging.relay import Relay, RelayOptions
from shared.platform.db import connect
from tests.support.kafka import event_ids, read_topic
from tests.support.polling import eventually
from tests.support.relay import make_relay, running
from tests.support.samples import SECRET_MARKERS
from tests.support.settings import event_signer

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool, REGISTRY, notifier=Notifier(pool))


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
        signer=event_signer(),
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic),
    )
    await store.append(
        f"account-{uuid.uuid4()}",
        [NewEvent(EmailChanged(email="new@example.org", previous_email="old@example.org"))],
        0,
    )
    from shared.messaging.integration import UnmappedEventError

    with pytest.raises(UnmappedEventError):
        await asyncio.wait_for(relay.run(asyncio.Event()), 15)
    assert await store.pool.fetchval("SELECT count(*) FROM relay_checkpoints") == 0


async def delete_topic(bootstrap: str, topic: str, *, recreate: bool) -> None:
    """Lose every record of ``topic``, as a broker on memory storage does when it restarts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        await eventually(lambda: _topic_gone(admin, topic))
    finally:
        await admin.close()
    if recreate:
        await ensure_topics(bootstrap, [topic])


async def _topic_gone(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def test_an_ack_below_the_known_end_makes_the_relay_publish_everything_again(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    # No periodic look at the topic within the test: only the acks can tell.
    relay = make_relay(
        database_url, store, kafka_bootstrap, topic, poll_interval=0.1, check_interval=600.0
    )
    async with running(relay):
        await eventually(lambda: relay.is_active)
        accounts = [str(uuid.uuid4()) for _ in range(8)]
        first = [await _email_changed(store, account, 0) for account in accounts]
        await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= len(first))
        await delete_topic(kafka_bootstrap, topic, recreate=True)
        # Same keys, same partitions: the broker acks these at offsets it had given before.
        second = [await _email_changed(store, account, 1) for account in accounts]
        records = await read_topic(
            kafka_bootstrap, topic, until=lambda r: set(event_ids(r)) >= {*first, *second}
        )
    assert relay.rewinds == 1
    assert set(event_ids(records)) == {*first, *second}


@pytest.mark.parametrize("recreate", [False, True], ids=["topic gone", "topic recreated empty"])
async def test_a_relay_that_becomes_active_republishes_what_the_broker_lost(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str, recreate: bool
) -> None:
    ids = await register(store, 6)
    async with running(make_relay(database_url, store, kafka_bootstrap, topic)):
        await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= len(ids))
    await delete_topic(kafka_bootstrap, topic, recreate=recreate)

    relay = make_relay(database_url, store, kafka_bootstrap, topic)
    async with running(relay):
        await eventually(lambda: relay.rewinds == 1)  # and the topic is there again
        records = await read_topic(
            kafka_bootstrap, topic, until=lambda r: set(event_ids(r)) >= set(ids)
        )
    assert relay.rewinds == 1
    assert sorted(event_ids(records)) == sorted(ids)  # each once: from the start, not twice
    saved = await store.pool.fetchval(
        "SELECT min_ends FROM relay_checkpoints WHERE name = $1", topic
    )
    assert {int(p) for p in saved} == {r.partition for r in records}  # known again, for next time


async def _email_changed(store: EventStore, account: str, version: int) -> str:
    event = NewEvent(EmailChanged(email=f"{uuid.uuid4().hex}@example.org", previous_email="a@b.c"))
    await store.append(f"account-{account}", [event], version)
    return str(event.event_id)


async def test_a_relay_waits_while_the_database_starts_up(
    store: EventStore,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusals = 3

    async def starting_up(dsn: str) -> asyncpg.Connection:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        return await connect(dsn)

    monkeypatch.setattr(relay_module, "connect", starting_up)
    ids = await register(store, 2)
    relay = make_relay(database_url, store, kafka_bootstrap, topic, standby_retry=0.1)
    async with running(relay) as task:
        records = await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= len(ids))
        assert not task.done()
    assert refusals == 0
    assert sorted(event_ids(records)) == sorted(ids)
