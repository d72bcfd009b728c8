"""Event store throughput against raw asyncpg on the same table shape, in one run.

Run it with ``python -m bench.eventstore``. It uses the server in ``TWOFA_DATABASE_URL``
(an admin URL) when set, or else starts an embedded PostgreSQL; each figure gets a fresh,
migrated database of its own, dropped afterwards, with the trigger-less copy
``raw_events`` of ``events`` as the baseline's table (``bench/storevsraw.py``).

Figures (the target: the event store keeps at least 75% of the baseline's throughput):

1. appends/s, one event per append, 8 writers each appending sequential versions to
   its own stream; baseline: a single-row ``INSERT ... VALUES`` per autocommit statement.
2. events/s, 100 events per append, 8 writers; baseline: one ``INSERT ... SELECT FROM
   unnest(...)`` of 100 rows per autocommit statement.
3. events/s reading everything with ``EventStore.read_all`` in pages of 500, decoded
   into typed events; baseline: the same SELECT paging by (transaction id, position),
   decoding the two JSON columns (data and metadata) with orjson, into plain dicts
   (``bench/rawread.py``). Both tables hold the same rows.
4. milliseconds to load a 10,000-event stream through ``Repository`` with a snapshot
   every 100 events, against loading a 100-event stream (no target: shown for scale).
   Both streams are saved 10 events at a time, so both end on a snapshot and a load is
   the snapshot row plus an empty tail of events.

Figures 1 and 2 are also figure 3 of the suite (``bench/parts/appends.py``). Throughput
runs are interleaved (store, raw, store, ...) after a short warm-up and each figure
reports the median of its runs; every run is kept in ``bench/results/eventstore.json``.
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import rawread
from bench.emailchanges import (
    EmailChanges,
    new_events,
    new_stream_id,
    seed_stream,
    snapshot_keys,
)
from bench.storevsraw import (
    BATCH,
    RUN_SECONDS,
    RUNS,
    TARGET,
    WRITERS,
    Comparison,
    Pools,
    bench_appends,
    compare,
    fresh_database,
    pools,
)
from shared.devtools.servers import EmbeddedPostgres
from shared.eventstore.repository import Repository
from shared.eventstore.store import START, Checkpoint, EventStore

READ_EVENTS = 50_000  # rows in both tables for figure 3
PAGE = 500
LONG_STREAM = 10_000
SHORT_STREAM = 100
SNAPSHOT_EVERY = 100
LOADS = 30  # timed loads per stream in figure 4
RESULTS = Path(__file__).resolve().parent / "results" / "eventstore.json"


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


# Figure 3: read everything ------------------------------------------------------------


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
            return await passes.rate(
                "raw", lambda: rawread.read_everything(p.raw, "raw_events", PAGE)
            )

        await store_run()  # the warm-up: one full read each
        await raw_run()
        result = await compare("3. read_all, pages of 500", "events/s", store_run, raw_run)
    if not passes.problems:
        return result
    problem = "; ".join(sorted(passes.problems))
    print(f"  WRONG RESULT: {problem}", flush=True)
    return replace(result, problem=problem)


# Figure 4: aggregate loads with snapshots ---------------------------------------------


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


async def load_ms(repository: Repository[int], stream_id: str, length: int) -> float:
    start = time.perf_counter()
    loaded = await repository.load(stream_id)
    elapsed = time.perf_counter() - start
    assert loaded.state == loaded.version == length, (loaded, length)
    return elapsed * 1000


async def bench_loads(admin: str) -> LoadTimes:
    async with fresh_database(admin) as url, pools(url) as p:
        repository = Repository(
            p.store, EmailChanges(), snapshot_keys(), snapshot_every=SNAPSHOT_EVERY
        )
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
