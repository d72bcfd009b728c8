"""Figure 3: event store appends against raw asyncpg INSERTs into the same table shape.

The measurement is ``bench/storevsraw.py``'s, shared with ``python -m bench.eventstore``
(which also has read and load figures): 8 writers, one event per append and then 100 per
append, interleaved with the raw baseline, median of 5 runs of 2 s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from bench import emailchanges, plots, storevsraw
from bench.parts import Options, Part
from bench.profiling import Profile, record
from bench.report import PartResult, Row
from bench.stack import Stack

GOAL = storevsraw.TARGET


async def run(stack: Stack, options: Options) -> PartResult:
    single = await storevsraw.bench_appends(
        stack.admin_url, 1, "append, 1 event, 8 writers", "appends/s"
    )
    batched = await storevsraw.bench_appends(
        stack.admin_url, storevsraw.BATCH, "append, 100 events, 8 writers", "events/s"
    )
    profiles: dict[str, Any] = {}
    if options.profile:
        for comparison, batch in ((single, 1), (batched, storevsraw.BATCH)):
            if not comparison.met:
                profile = await profile_appends(stack.admin_url, batch)
                split = await statement_alone(stack.admin_url, batch)
                profiles[f"appends of {batch}"] = profile.to_json() | {"split": split}
                print(profile.text(), flush=True)
                print(
                    "  the same runs three ways (median events/s): "
                    + ", ".join(f"{k} {v:,.0f}" for k, v in split.items()),
                    flush=True,
                )
    rows = [
        Row(
            3,
            "Appends/s, 1 event per append, 8 writers",
            single.store,
            single.raw,
            "raw asyncpg INSERT",
            "/s",
            goal=f"≥ {GOAL:.0%} of baseline",
            met=single.met,
        ),
        Row(
            3,
            "Events/s, 100 events per append, 8 writers",
            batched.store,
            batched.raw,
            "raw INSERT … unnest",
            "/s",
            goal=f"≥ {GOAL:.0%} of baseline",
            met=batched.met,
        ),
    ]
    data = {
        "runs": {
            "single": {"store": single.store_runs, "raw": single.raw_runs},
            "batched": {"store": batched.store_runs, "raw": batched.raw_runs},
        },
        "writers": storevsraw.WRITERS,
        "run_seconds": storevsraw.RUN_SECONDS,
    }
    return PartResult(
        "appends", 3, "Event store appends vs raw asyncpg", rows, data, profiles=profiles
    )


class StatementWriter:
    """The store's kind of append statement, from plain asyncpg with the raw writer's JSON:
    what the SQL costs without the store's Python (encoding, codecs, the relay's NOTIFY)."""

    # What ``EventStore.append`` sends (the unnest INSERT guarded by the stream's version,
    # in one statement), written out here against the trigger-less copy of the table.
    SQL = """
INSERT INTO raw_events (stream_id, stream_version, event_id, event_type, schema_version,
                        data, metadata)
SELECT $1, $2 + e.ord, e.event_id, e.event_type, e.schema_version, e.data::jsonb, e.metadata::jsonb
FROM unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[]) WITH ORDINALITY
     AS e(event_id, event_type, schema_version, data, metadata, ord)
WHERE (SELECT coalesce(max(stream_version), 0) FROM raw_events WHERE stream_id = $1) = $2
RETURNING position
"""

    def __init__(self, pool: asyncpg.Pool, batch: int) -> None:
        self.pool, self.batch = pool, batch
        self.stream_id, self.version = emailchanges.new_stream_id(), 0

    async def step(self) -> int:
        numbers = range(self.version, self.version + self.batch)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                self.SQL,
                self.stream_id,
                self.version,
                [uuid.uuid4() for _ in numbers],
                [emailchanges.EVENT_TYPE for _ in numbers],
                [1 for _ in numbers],
                [emailchanges.raw_data(n) for n in numbers],
                [emailchanges.raw_metadata() for _ in numbers],
            )
        assert len(rows) == self.batch
        self.version += self.batch
        return self.batch


async def statement_alone(admin_url: str, batch: int, runs: int = 3) -> dict[str, float]:
    """Median rates of the store, its statement alone, and the raw INSERT, interleaved."""
    rates: dict[str, list[float]] = {}
    async with storevsraw.fresh_database(admin_url) as url, storevsraw.pools(url) as p:
        writers: dict[str, Callable[[], storevsraw.Writer]] = {
            "event store": lambda: storevsraw.StoreWriter(p.store, batch),
            "its statement from plain asyncpg": lambda: StatementWriter(p.raw, batch),
            "raw INSERT": lambda: storevsraw.RawWriter(p.raw, batch),
        }
        for _ in range(runs):
            for name, make in writers.items():
                rate = await storevsraw.write_rate(make, storevsraw.RUN_SECONDS)
                rates.setdefault(name, []).append(rate)
    return {name: statistics.median(values) for name, values in rates.items()}


async def profile_appends(admin_url: str, batch: int, seconds: float = 3.0) -> Profile:
    """py-spy on this process (waiting included) while the store's writers append."""
    async with storevsraw.fresh_database(admin_url) as url, storevsraw.pools(url) as p:
        sampling = asyncio.create_task(
            record(os.getpid(), seconds, f"bench process (appends of {batch})", idle=True)
        )
        await asyncio.sleep(0.3)
        await storevsraw.write_rate(lambda: storevsraw.StoreWriter(p.store, batch), seconds)
        return await sampling


def plot(data: Mapping[str, Any], path: Path) -> None:
    fig, axes = plots.figure(2)
    for ax, key, title in (
        (axes[0], "single", "1 event per append (appends/s)"),
        (axes[1], "batched", "100 events per append (events/s)"),
    ):
        runs = data["runs"][key]
        ax.boxplot([runs["store"], runs["raw"]], tick_labels=["event store", "raw asyncpg"])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("per second (each run of 2 s)")
        ax.set_ylim(bottom=0)
    plots.save(fig, path, "3. Event store appends, 8 writers, vs raw INSERTs (same table shape)")


PART = Part("appends", 3, "Event store appends vs raw asyncpg", False, run, plot)
