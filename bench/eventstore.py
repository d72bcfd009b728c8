"""Event store throughput against raw asyncpg on the same table shape, in one run.

Run it with ``python -m bench.eventstore`` (``make bench``). It uses the server in
``TWOFA_DATABASE_URL`` (an admin URL) when set, or else starts an embedded PostgreSQL;
each figure gets a fresh, migrated database of its own, dropped afterwards.

The baseline table ``raw_events`` is ``CREATE TABLE ... (LIKE events INCLUDING ALL)``:
the same columns, defaults, identity, constraints and indexes, but none of the triggers
(append-only guards, the relay's NOTIFY). Both sides write the same JSON payloads, as
orjson text cast to jsonb, and both take a pooled connection per operation, so a ratio
shows what the event store adds on top of the SQL a hand-written append would send.

Figures (the target: the event store keeps at least 75% of the baseline's throughput):

1. appends/s, one event per append, 8 writers each appending sequential versions to
   its own stream; baseline: a single-row ``INSERT ... VALUES`` per autocommit statement.
2. events/s, 100 events per append, 8 writers; baseline: one ``INSERT ... SELECT FROM
   unnest(...)`` of 100 rows per autocommit statement.
3. events/s reading everything with ``EventStore.read_all`` in pages of 500, decoded
   into typed events; baseline: the same SELECT paging by (transaction id, position),
   decoding the two JSON columns (data and metadata) with orjson, into plain dicts.
   Both tables hold the same rows. The
   baseline orders by the xid8 column itself (``raw_events.transaction_id``): an
   unqualified ``transaction_id`` would name the ``::text`` output column.
4. milliseconds to load a 10,000-event stream through ``Repository`` with a snapshot
   every 100 events, against loading a 100-event stream (no target: shown for scale).
   Both streams are saved 10 events at a time, so both end on a snapshot and a load is
   the snapshot row plus an empty tail of events.

Throughput runs are interleaved (store, raw, store, ...) after a short warm-up and each
figure reports the median of its runs; every run is kept in
``bench/results/eventstore.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson

from shared.devtools.servers import EmbeddedPostgres
from shared.domain.base import DomainEvent
from shared.domain.events import EmailChanged
from shared.eventstore.envelope import NewEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.repository import Repository
from shared.eventstore.store import START, Checkpoint, EventStore
from shared.platform.db import create_pool, migrate

TARGET = 0.75  # the event store keeps at least this share of the raw baseline
WRITERS = 8
BATCH = 100  # events per append in figure 2
RUNS = 5  # timed runs per side of each throughput figure; the median is reported
RUN_SECONDS = 2.0  # length of one timed write run
WARMUP_SECONDS = 0.5
READ_EVENTS = 50_000  # rows in both tables for figure 3
PAGE = 500
LONG_STREAM = 10_000
SHORT_STREAM = 100
SNAPSHOT_EVERY = 100
SEED_BATCH = 10  # events per save while building the streams of figure 4
LOADS = 30  # timed loads per stream in figure 4
POOL_MIN, POOL_MAX = 8, 16
RESULTS = Path(__file__).resolve().parent / "results" / "eventstore.json"
EVENT_TYPE = EmailChanged.type


# Servers and databases ----------------------------------------------------------------


@contextlib.contextmanager
def admin_url() -> Iterator[str]:
    """``TWOFA_DATABASE_URL`` if set, else an embedded PostgreSQL for the whole run."""
    url = os.environ.get("TWOFA_DATABASE_URL")
    if url:
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="twofa-bench-") as tmp,
        EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True) as server,
    ):
        yield server.dsn()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


async def admin_execute(url: str, sql: str) -> None:
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
    store_pool = await create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX)
    raw_pool = await asyncpg.create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX)
    assert raw_pool is not None
    both = Pools(EventStore(store_pool, REGISTRY, notifier=Notifier(store_pool)), raw_pool)
    try:
        yield both
    finally:
        await both.close()


# Payloads -----------------------------------------------------------------------------


def email_changed(n: int) -> EmailChanged:
    return EmailChanged(email=f"user{n + 1}@example.com", previous_email=f"user{n}@example.com")


def new_events(first: int, count: int) -> list[NewEvent]:
    return [NewEvent(email_changed(first + i)) for i in range(count)]


def raw_data(n: int) -> str:
    """The same JSON the store writes for ``email_changed(n)``."""
    return orjson.dumps(
        {"email": f"user{n + 1}@example.com", "previous_email": f"user{n}@example.com"}
    ).decode()


def raw_metadata() -> str:
    """The same JSON shape as ``EventMetadata``: a fresh correlation id and timestamp."""
    meta = {
        "correlation_id": uuid.uuid4(),
        "causation_id": None,
        "actor": None,
        "occurred_at": datetime.now(UTC),
    }
    return orjson.dumps(meta).decode()


def new_stream_id() -> str:
    return f"account-{uuid.uuid4()}"


# Writers: one per concurrent task, each on its own stream ----------------------------


class Writer(Protocol):
    async def step(self) -> int:
        """Append once; return how many events were written."""
        ...


class StoreWriter:
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


# Results ------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class LoadTimes:
    """Milliseconds to load a long stream and a short one (lower is better)."""

    figure: str
    long_ms: list[float]
    short_ms: list[float]

    @property
    def long(self) -> float:
        return statistics.median(self.long_ms)

    @property
    def short(self) -> float:
        return statistics.median(self.short_ms)

    @property
    def ratio(self) -> float:
        return self.long / self.short


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


# Figures 1 and 2: appends -------------------------------------------------------------


async def bench_appends(admin: str, batch: int, figure: str, unit: str) -> Comparison:
    async with fresh_database(admin) as url, pools(url) as p:

        async def store_run() -> float:
            return await write_rate(lambda: StoreWriter(p.store, batch), RUN_SECONDS)

        async def raw_run() -> float:
            return await write_rate(lambda: RawWriter(p.raw, batch), RUN_SECONDS)

        await write_rate(lambda: StoreWriter(p.store, batch), WARMUP_SECONDS)
        await write_rate(lambda: RawWriter(p.raw, batch), WARMUP_SECONDS)
        return await compare(figure, unit, store_run, raw_run)


# Figure 3: read everything ------------------------------------------------------------

# The store's SELECT with qualified ORDER BY columns: the commit-order index serves it.
_RAW_READ_ALL = """
SELECT position, transaction_id::text AS transaction_id, stream_id, stream_version, event_id,
       event_type, schema_version, data, metadata, recorded_at
FROM raw_events
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY raw_events.transaction_id, raw_events.position
LIMIT $3
"""


async def seed_read_set(p: Pools) -> None:
    """``READ_EVENTS`` events through the store, then the same rows copied to raw_events."""
    for _ in range(READ_EVENTS // BATCH):
        await p.store.append(new_stream_id(), new_events(0, BATCH), 0)
    async with p.raw.acquire() as conn:
        await conn.execute(
            """INSERT INTO raw_events (stream_id, stream_version, event_id, event_type,
                                       schema_version, data, metadata, recorded_at)
               SELECT stream_id, stream_version, event_id, event_type,
                      schema_version, data, metadata, recorded_at
               FROM events ORDER BY transaction_id, position"""
        )
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("VACUUM ANALYZE raw_events")


async def store_read_all(store: EventStore) -> int:
    checkpoint, count = START, 0
    while batch := await store.read_all(checkpoint, limit=PAGE):
        count += len(batch)
        last = batch[-1]
        checkpoint = Checkpoint(last.transaction_id, last.position)
    return count


async def raw_read_all(pool: asyncpg.Pool) -> int:
    transaction_id, position, count = "0", 0, 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_RAW_READ_ALL, transaction_id, position, PAGE)
        if not rows:
            return count
        # Both JSON columns, as the store decodes both (data into the event, metadata).
        decoded = [(orjson.loads(r["data"]), orjson.loads(r["metadata"])) for r in rows]
        count += len(decoded)
        transaction_id, position = rows[-1]["transaction_id"], rows[-1]["position"]


@dataclass(slots=True)
class ReadPasses:
    """Times passes over everything and notes any pass that did not return every event."""

    problems: set[str] = field(default_factory=set)

    async def rate(self, side: str, read: Callable[[], Awaitable[int]]) -> float:
        start = time.perf_counter()
        count = await read()
        elapsed = time.perf_counter() - start
        if count != READ_EVENTS:
            self.problems.add(f"{side} read {count:,} of {READ_EVENTS:,} events")
        return count / elapsed


async def bench_read_all(admin: str) -> Comparison:
    passes = ReadPasses()
    async with fresh_database(admin) as url, pools(url) as p:
        await seed_read_set(p)

        async def store_run() -> float:
            return await passes.rate("store", lambda: store_read_all(p.store))

        async def raw_run() -> float:
            return await passes.rate("raw", lambda: raw_read_all(p.raw))

        await store_run()  # the warm-up: one full read each
        await raw_run()
        result = await compare("3. read_all, pages of 500", "events/s", store_run, raw_run)
    if not passes.problems:
        return result
    problem = "; ".join(sorted(passes.problems))
    print(f"  WRONG RESULT: {problem}", flush=True)
    return replace(result, problem=problem)


# Figure 4: aggregate loads with snapshots ---------------------------------------------


class EmailChanges:
    """A small fold: how many times the email changed."""

    snapshot_type = "bench.email_changes"
    snapshot_schema_version = 1

    def initial(self) -> int:
        return 0

    def evolve(self, state: int, event: DomainEvent) -> int:
        assert isinstance(event, EmailChanged)
        return state + 1

    def to_snapshot(self, state: int) -> dict[str, Any]:
        return {"count": state}

    def from_snapshot(self, data: dict[str, Any]) -> int:
        return int(data["count"])


async def seed_stream(repository: Repository[int], length: int) -> str:
    """A stream of ``length`` events saved ``SEED_BATCH`` at a time, snapshots included."""
    stream_id = new_stream_id()
    loaded = await repository.load(stream_id)
    while loaded.version < length:
        events = new_events(loaded.version, min(SEED_BATCH, length - loaded.version))
        loaded = await repository.save(stream_id, loaded, events)
    return stream_id


async def load_ms(repository: Repository[int], stream_id: str, length: int) -> float:
    start = time.perf_counter()
    loaded = await repository.load(stream_id)
    elapsed = time.perf_counter() - start
    assert loaded.state == loaded.version == length, (loaded, length)
    return elapsed * 1000


async def bench_loads(admin: str) -> LoadTimes:
    async with fresh_database(admin) as url, pools(url) as p:
        repository = Repository(p.store, EmailChanges(), snapshot_every=SNAPSHOT_EVERY)
        long_id = await seed_stream(repository, LONG_STREAM)
        short_id = await seed_stream(repository, SHORT_STREAM)
        long_ms: list[float] = []
        short_ms: list[float] = []
        for i in range(LOADS + 3):  # the first three loads of each are the warm-up
            long_time = await load_ms(repository, long_id, LONG_STREAM)
            short_time = await load_ms(repository, short_id, SHORT_STREAM)
            if i >= 3:
                long_ms.append(long_time)
                short_ms.append(short_time)
    result = LoadTimes("4. Repository.load, snapshot every 100", long_ms, short_ms)
    print(f"  {result.figure} (ms, median): {result.long:.2f} vs {result.short:.2f}", flush=True)
    return result


# Report -------------------------------------------------------------------------------


def markdown(comparisons: Sequence[Comparison], loads: LoadTimes) -> str:
    lines = [
        "| Figure | Event store | Raw asyncpg | Ratio | Target |",
        "|---|---:|---:|---:|---|",
    ]
    for c in comparisons:
        verdict = "met" if c.met else "NOT met"
        if c.problem:
            verdict += f" ({c.problem})"
        lines.append(
            f"| {c.figure} ({c.unit}) | {c.store:,.0f} | {c.raw:,.0f} | {c.ratio:.0%} "
            f"| ≥ {TARGET:.0%}: {verdict} |"
        )
    lines.append(
        f"| {loads.figure}: {LONG_STREAM:,} vs {SHORT_STREAM} events (ms, median of {LOADS}) "
        f"| {loads.long:.2f} | {loads.short:.2f} | {loads.ratio:.2f}x the time | n/a |"
    )
    return "\n".join(lines)


async def server_version(admin: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def write_json(
    comparisons: Sequence[Comparison], loads: LoadTimes, environment: dict[str, Any]
) -> None:
    document = {
        "target": TARGET,
        "settings": {
            "writers": WRITERS,
            "batch": BATCH,
            "runs": RUNS,
            "run_seconds": RUN_SECONDS,
            "read_events": READ_EVENTS,
            "page": PAGE,
            "snapshot_every": SNAPSHOT_EVERY,
            "loads": LOADS,
        },
        "environment": environment,
        "comparisons": [
            asdict(c) | {"store": c.store, "raw": c.raw, "ratio": c.ratio, "met": c.met}
            for c in comparisons
        ],
        "loads": asdict(loads)
        | {"long_stream": LONG_STREAM, "short_stream": SHORT_STREAM, "ratio": loads.ratio},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


async def run(admin: str) -> None:
    environment = {
        "postgres": await server_version(admin),
        "server": "TWOFA_DATABASE_URL" if os.environ.get("TWOFA_DATABASE_URL") else "embedded",
        "python": platform.python_version(),
        "asyncpg": asyncpg.__version__,
        "cpus": os.cpu_count(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(
        f"PostgreSQL {environment['postgres']} ({environment['server']}); runs in order:",
        flush=True,
    )
    comparisons = [
        await bench_appends(admin, 1, "1. append, 1 event, 8 writers", "appends/s"),
        await bench_appends(admin, BATCH, "2. append, 100 events, 8 writers", "events/s"),
        await bench_read_all(admin),
    ]
    loads = await bench_loads(admin)
    print()
    print(markdown(comparisons, loads))
    met = sum(c.met for c in comparisons)
    print(f"\nTarget (event store ≥ {TARGET:.0%} of raw): met for {met} of {len(comparisons)}")
    write_json(comparisons, loads, environment)
    print(f"Results: {RESULTS}")


def main() -> None:
    with admin_url() as admin:
        asyncio.run(run(admin))


if __name__ == "__main__":
    main()
