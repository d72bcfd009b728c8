"""Aggregates loaded from snapshots plus later events; migrations applied idempotently."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from shared.domain.base import DomainEvent
from shared.eventstore.envelope import NewEvent
from shared.eventstore.registry import EventRegistry
from shared.eventstore.repository import Loaded, Repository
from shared.eventstore.store import ConcurrencyError, EventStore
from shared.platform.db import MIGRATIONS_DIR, migrate
from shared.security.snapshot_mac import SnapshotKeys

pytestmark = pytest.mark.integration

registry = EventRegistry()
KEYS = SnapshotKeys({"t1": secrets.token_bytes(32)}, "t1")


@registry.register
@dataclass(frozen=True, slots=True, kw_only=True)
class Added(DomainEvent):
    type = "test.added"
    amount: int


@dataclass(frozen=True, slots=True)
class Total:
    value: int
    events: int


class Counter:
    """A small fold: the running total of ``Added`` events, and how many it folded."""

    snapshot_type = "counter"
    snapshot_schema_version = 1

    def __init__(self) -> None:
        self.folded = 0

    def initial(self) -> Total:
        return Total(0, 0)

    def evolve(self, state: Total, event: DomainEvent) -> Total:
        assert isinstance(event, Added)
        self.folded += 1
        return Total(state.value + event.amount, state.events + 1)

    def to_snapshot(self, state: Total) -> dict[str, Any]:
        return {"value": state.value, "events": state.events}

    def from_snapshot(self, data: dict[str, Any]) -> Total:
        return Total(data["value"], data["events"])


def adds(n: int) -> list[NewEvent]:
    return [NewEvent(Added(amount=1)) for _ in range(n)]


async def test_long_stream_loads_from_its_snapshot(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, registry)
    fold = Counter()
    repo = Repository(store, fold, KEYS, snapshot_every=100)
    sid = f"counter-{uuid.uuid4()}"
    loaded: Loaded[Total] = await repo.load(sid)
    for _ in range(100):  # 10,000 events, 100 per append
        loaded = await repo.save(sid, loaded, adds(100))
    loaded = await repo.save(sid, loaded, adds(7))
    assert loaded.version == 10_007

    fold.folded = 0
    again = await repo.load(sid)
    assert again == Loaded(Total(10_007, 10_007), 10_007)
    assert fold.folded == 7  # only the events after the newest snapshot were read

    await pool.execute("DELETE FROM snapshots")  # a cache: dropping it changes nothing
    fold.folded = 0
    assert await repo.load(sid) == again
    assert fold.folded == 10_007


async def test_save_with_a_stale_load_raises(pool: asyncpg.Pool) -> None:
    repo = Repository(EventStore(pool, registry), Counter(), KEYS)
    sid = f"counter-{uuid.uuid4()}"
    stale = await repo.load(sid)
    await repo.save(sid, stale, adds(1))
    with pytest.raises(ConcurrencyError):
        await repo.save(sid, stale, adds(1))


async def test_snapshot_rolls_back_with_its_transaction(pool: asyncpg.Pool) -> None:
    repo = Repository(EventStore(pool, registry), Counter(), KEYS, snapshot_every=2)
    sid = f"counter-{uuid.uuid4()}"
    loaded = await repo.load(sid)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await repo.save(sid, loaded, adds(3), connection=conn)
        assert await conn.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = $1", sid) == 1
        await tx.rollback()
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = $1", sid) == 0
    assert await repo.load(sid) == Loaded(Total(0, 0), 0)


async def test_snapshot_keys_rotate_and_one_under_a_removed_key_is_ignored_then_replaced(
    pool: asyncpg.Pool,
) -> None:
    old, new = {"k-old": secrets.token_bytes(32)}, {"k-new": secrets.token_bytes(32)}
    store, fold, sid = EventStore(pool, registry), Counter(), f"counter-{uuid.uuid4()}"
    before = Repository(store, fold, SnapshotKeys(old, "k-old"), snapshot_every=4)
    await before.save(sid, await before.load(sid), adds(5))  # a snapshot at 5, under k-old

    during = Repository(store, fold, SnapshotKeys({**old, **new}, "k-new"), snapshot_every=4)
    fold.folded = 0
    assert await during.load(sid) == Loaded(Total(5, 5), 5) and fold.folded == 0  # believed

    after = Repository(store, fold, SnapshotKeys(new, "k-new"), snapshot_every=4)
    fold.folded = 0
    loaded = await after.load(sid)
    assert loaded == Loaded(Total(5, 5), 5) and fold.folded == 5  # k-old is gone: ignored
    await after.save(sid, loaded, adds(3))  # the next snapshot replaces it
    row = await pool.fetchrow(
        "SELECT stream_version, key_id FROM snapshots WHERE stream_id = $1", sid
    )
    assert (row["stream_version"], row["key_id"]) == (8, "k-new")


async def test_a_forged_snapshot_ahead_of_its_stream_is_ignored_and_then_replaced(
    pool: asyncpg.Pool,
) -> None:
    store, fold, sid = EventStore(pool, registry), Counter(), f"counter-{uuid.uuid4()}"
    repo = Repository(store, fold, KEYS, snapshot_every=2)
    await repo.save(sid, await repo.load(sid), adds(1))
    forged = b'{"value":1000000,"events":1}'  # at a version the stream will not reach soon
    await pool.execute(
        "INSERT INTO snapshots (stream_id, snapshot_type, stream_version, schema_version, state,"
        " key_id, mac) VALUES ($1, 'counter', 1000000, 1, $2, 't1', $3)",
        *(sid, forged, secrets.token_bytes(32)),
    )
    loaded = await repo.load(sid)
    assert loaded == Loaded(Total(1, 1), 1)
    await repo.save(sid, loaded, adds(1))  # version 2: a snapshot, which replaces the forgery
    row = await pool.fetchrow(
        "SELECT stream_version, state FROM snapshots WHERE stream_id = $1", sid
    )
    assert (row["stream_version"], row["state"]) == (2, b'{"value":2,"events":2}')


async def test_migrations_apply_once(database_url: str) -> None:
    assert await migrate(database_url) == []  # the template already has them all
    conn = await asyncpg.connect(database_url)
    try:
        names = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
    finally:
        await conn.close()
    assert names[0]["name"] == "0001_event_store"


async def test_migrations_on_an_empty_database_then_again(postgres_url: str) -> None:
    from tests.support.servers import with_database

    name = f"twofa_fresh_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(postgres_url, name)
        import asyncio

        first, second = await asyncio.gather(migrate(url), migrate(url))
        every = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql"))
        assert sorted([first, second], key=len) == [[], every]
        assert await migrate(url) == []
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
