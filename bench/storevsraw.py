"""The event store against raw asyncpg on the same table shape: databases, writers, runs.

Each comparison gets a fresh, migrated database of its own, dropped afterwards, with a
baseline table ``raw_events`` made by ``CREATE TABLE ... (LIKE events INCLUDING ALL)``:
the same columns, defaults, identity, constraints and indexes, but none of the triggers
(append-only guards, the relay's NOTIFY). Both sides write the same JSON payloads
(``bench/emailchanges.py``) and both take a pooled connection per operation, so a ratio
shows what the event store adds on top of the SQL a hand-written append would send.

Throughput runs are interleaved (store, raw, store, ...) after a short warm-up and a
comparison reports the median of its runs. Used by figure 3
(``bench/parts/appends.py``), ``python -m bench.eventstore``, and figure 7 for its
writer (``bench/parts/peer.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from bench.emailchanges import EVENT_TYPE, new_events, new_stream_id, raw_data, raw_metadata
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.platform.db import create_pool, migrate

TARGET = 0.75  # the event store keeps at least this share of the raw baseline
WRITERS = 8
BATCH = 100  # events per append in the batched figure
RUNS = 5  # timed runs per side of each throughput figure; the median is reported
RUN_SECONDS = 2.0  # length of one timed write run
WARMUP_SECONDS = 0.5
POOL_MIN, POOL_MAX = 8, 16


# Databases and pools ------------------------------------------------------------------


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointed at ``database``."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


async def admin_execute(url: str, sql: str) -> None:
    """Run one statement on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(admin: str) -> AsyncIterator[str]:
    """A new migrated database with a trigger-less copy of ``events``; dropped on exit."""
    name = f"twofa_bench_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin, f'CREATE DATABASE "{name}"')
    url = with_database(admin, name)
    try:
        await migrate(url)
        await admin_execute(url, "CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        yield url
    finally:
        await admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(slots=True)
class Pools:
    """The store's pool (orjson codecs) and a plain asyncpg pool for the baseline."""

    store: EventStore
    raw: asyncpg.Pool

    async def close(self) -> None:
        await self.store.pool.close()
        await self.raw.close()


@contextlib.asynccontextmanager
async def pools(url: str) -> AsyncIterator[Pools]:
    """Both pools on ``url``, closed on exit."""
    store_pool = await create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX)
    raw_pool = await asyncpg.create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX)
    assert raw_pool is not None
    both = Pools(EventStore(store_pool, REGISTRY, notifier=Notifier(store_pool)), raw_pool)
    try:
        yield both
    finally:
        await both.close()


# Writers: one per concurrent task, each on its own stream ----------------------------


class Writer(Protocol):
    async def step(self) -> int:
        """Append once; return how many events were written."""
        ...


class StoreWriter:
    """``EventStore.append`` of ``batch`` events at a time to a stream of its own."""

    def __init__(self, store: EventStore, batch: int) -> None:
        self.store, self.batch = store, batch
        self.stream_id, self.version = new_stream_id(), 0

    async def step(self) -> int:
        events = new_events(self.version, self.batch)
        self.version = await self.store.append(self.stream_id, events, self.version)
        return self.batch


_RAW_INSERT_ONE = """
INSERT INTO raw_events (stream_id, stream_version, event_id, event_type, schema_version,
                        data, metadata)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)
"""

_RAW_INSERT_MANY = """
INSERT INTO raw_events (stream_id, stream_version, event_id, event_type, schema_version,
                        data, metadata)
SELECT $1, $2 + e.ord, e.event_id, e.event_type, e.schema_version, e.data::jsonb, e.metadata::jsonb
FROM unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[]) WITH ORDINALITY
     AS e(event_id, event_type, schema_version, data, metadata, ord)
"""


class RawWriter:
    """The baseline: a single-row ``INSERT ... VALUES`` per autocommit statement for one
    event, one ``INSERT ... SELECT FROM unnest(...)`` for a batch."""

    def __init__(self, pool: asyncpg.Pool, batch: int) -> None:
        self.pool, self.batch = pool, batch
        self.stream_id, self.version = new_stream_id(), 0

    async def step(self) -> int:
        async with self.pool.acquire() as conn:
            if self.batch == 1:
                await self._insert_one(conn)
            else:
                await self._insert_many(conn)
        self.version += self.batch
        return self.batch

    async def _insert_one(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            _RAW_INSERT_ONE,
            self.stream_id,
            self.version + 1,
            uuid.uuid4(),
            EVENT_TYPE,
            1,
            raw_data(self.version),
            raw_metadata(),
        )

    async def _insert_many(self, conn: asyncpg.Connection) -> None:
        numbers = range(self.version, self.version + self.batch)
        await conn.execute(
            _RAW_INSERT_MANY,
            self.stream_id,
            self.version,
            [uuid.uuid4() for _ in numbers],
            [EVENT_TYPE for _ in numbers],
            [1 for _ in numbers],
            [raw_data(n) for n in numbers],
            [raw_metadata() for _ in numbers],
        )


async def write_rate(make_writer: Callable[[], Writer], seconds: float) -> float:
    """Events/s of ``WRITERS`` concurrent writers appending until ``seconds`` have passed."""
    writers = [make_writer() for _ in range(WRITERS)]
    start = time.perf_counter()
    deadline = start + seconds

    async def drive(writer: Writer) -> int:
        written = 0
        while time.perf_counter() < deadline:
            written += await writer.step()
        return written

    counts = await asyncio.gather(*(drive(w) for w in writers))
    return sum(counts) / (time.perf_counter() - start)


# Comparisons --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """A throughput of the event store next to the raw baseline's (higher is better)."""

    figure: str
    unit: str
    store_runs: list[float]
    raw_runs: list[float]
    problem: str | None = None  # a wrong result, which fails the figure whatever its speed

    @property
    def store(self) -> float:
        return statistics.median(self.store_runs)

    @property
    def raw(self) -> float:
        return statistics.median(self.raw_runs)

    @property
    def ratio(self) -> float:
        return self.store / self.raw

    @property
    def met(self) -> bool:
        return self.problem is None and self.ratio >= TARGET


async def compare(
    figure: str,
    unit: str,
    store_run: Callable[[], Awaitable[float]],
    raw_run: Callable[[], Awaitable[float]],
) -> Comparison:
    """Time both sides ``RUNS`` times each, interleaved (warm them up first)."""
    store_runs: list[float] = []
    raw_runs: list[float] = []
    for _ in range(RUNS):
        store_runs.append(await store_run())
        raw_runs.append(await raw_run())
    result = Comparison(figure, unit, store_runs, raw_runs)
    print(
        f"  {figure} ({unit}): store {runs_text(store_runs)} | raw {runs_text(raw_runs)}",
        flush=True,
    )
    return result


def runs_text(runs: Sequence[float]) -> str:
    return " ".join(f"{r:,.0f}" for r in runs)


async def bench_appends(admin: str, batch: int, figure: str, unit: str) -> Comparison:
    """``WRITERS`` writers appending ``batch`` events at a time: the store against raw
    INSERTs, in a fresh database."""
    async with fresh_database(admin) as url, pools(url) as p:

        async def store_run() -> float:
            return await write_rate(lambda: StoreWriter(p.store, batch), RUN_SECONDS)

        async def raw_run() -> float:
            return await write_rate(lambda: RawWriter(p.raw, batch), RUN_SECONDS)

        await write_rate(lambda: StoreWriter(p.store, batch), WARMUP_SECONDS)
        await write_rate(lambda: RawWriter(p.raw, batch), WARMUP_SECONDS)
        return await compare(figure, unit, store_run, raw_run)
