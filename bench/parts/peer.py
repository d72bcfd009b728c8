"""Figure 7: the peer library, ``eventsourcing`` on PostgreSQL (psycopg 3), beside ours.

Both write to databases of their own on the same embedded server. An append is one new
event per transaction on the writer's own aggregate: for the peer ``Application.save``
of an aggregate that changed once (its recorder also takes the table lock that orders
its notification log), for us ``EventStore.append``. Writers are threads for the peer
(its API is synchronous) and tasks for us; runs of 2 s, interleaved, median of 3. The
load is of an aggregate of 20 events, no snapshots on either side: the peer's
``repository.get`` against our ``Repository.load``, interleaved, 20 of each first as a
warm-up. Both sides write the same email-change events.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

# The bench extra; without it mypy sees Any here, hence the ignores on the subclasses.
from eventsourcing.application import Application  # type: ignore[import-not-found,unused-ignore]
from eventsourcing.domain import Aggregate, event  # type: ignore[import-not-found,unused-ignore]

from bench import plots
from bench.emailchanges import EmailChanges, seed_stream, snapshot_keys
from bench.loadgen import percentile
from bench.parts import Options, Part
from bench.profiling import Profile, record
from bench.report import PartResult, Row
from bench.stack import Stack
from bench.storevsraw import StoreWriter
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.repository import Repository
from shared.eventstore.store import EventStore
from shared.platform.db import create_pool

# The two queries of a load, written out here: the snapshot lookup
# ``EventStore.load_snapshot`` sends, then the events ``EventStore.read_stream`` reads.
_SNAPSHOT = (
    "SELECT stream_version, schema_version, state, key_id, mac FROM snapshots"
    " WHERE stream_id = $1 AND snapshot_type = $2"
)
_STREAM_EVENTS = """
SELECT position, transaction_id::text AS txid, stream_id, stream_version, event_id,
       event_type, schema_version, data, metadata, recorded_at
FROM events
WHERE stream_id = $1 AND stream_version > $2
ORDER BY stream_version
"""
GOAL = 3.0
WRITERS = (1, 8)
RUNS = 3
RUN_SECONDS = 2.0
STREAM = 20
LOADS = 300
WARMUP = 20


class Account(Aggregate):  # type: ignore[misc,unused-ignore]
    """The peer's aggregate: an email address that changes."""

    def __init__(self, email: str) -> None:
        self.email = email

    @event("EmailChanged")  # type: ignore[untyped-decorator,unused-ignore]
    def change_email(self, email: str, previous_email: str) -> None:
        self.email = email


class Accounts(Application[UUID]):  # type: ignore[misc,unused-ignore]
    name = "BenchAccounts"


def peer_app(stack: Stack, database: str) -> Accounts:
    socket_dir = stack.socket_dir
    sockets = sorted(Path(socket_dir).glob(".s.PGSQL.*"))
    port = sockets[0].name.rpartition(".")[2] if sockets else "5432"
    return Accounts(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": database,
            "POSTGRES_HOST": socket_dir,
            "POSTGRES_PORT": port,
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_POOL_SIZE": "8",
            "POSTGRES_MAX_OVERFLOW": "8",
            "CREATE_TABLE": "y",
        }
    )


def peer_rate(app: Accounts, writers: int, seconds: float) -> float:
    """Appends/s of ``writers`` threads, each saving one change at a time."""

    def worker(deadline: float) -> int:
        account = Account(email="user0@example.com")
        app.save(account)
        done = 0
        while time.perf_counter() < deadline:
            account.change_email(f"user{done + 1}@example.com", account.email)
            app.save(account)
            done += 1
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        counts = list(pool.map(worker, [start + seconds] * writers))
    return sum(counts) / (time.perf_counter() - start)


async def ours_rate(store: EventStore, writers: int, seconds: float) -> float:
    """Appends/s of ``writers`` tasks, each appending one event at a time to its stream."""
    start = time.perf_counter()
    deadline = start + seconds

    async def drive() -> int:
        writer, done = StoreWriter(store, 1), 0
        while time.perf_counter() < deadline:
            done += await writer.step()
        return done

    counts = await asyncio.gather(*(drive() for _ in range(writers)))
    return sum(counts) / (time.perf_counter() - start)


async def run(stack: Stack, options: Options) -> PartResult:
    ours_db = await stack.database()
    app = peer_app(stack, await stack.empty_database("peer"))
    pool = await create_pool(ours_db.service_url, min_size=8, max_size=16)
    rates: dict[str, dict[str, list[float]]] = {}
    profiles: dict[str, Any] = {}
    try:
        store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
        await asyncio.to_thread(peer_rate, app, 8, 0.5)  # warm-up: tables, pools
        await ours_rate(store, 8, 0.5)
        for writers in WRITERS:
            runs: dict[str, list[float]] = {"ours": [], "peer": []}
            for _ in range(RUNS):
                runs["peer"].append(await asyncio.to_thread(peer_rate, app, writers, RUN_SECONDS))
                runs["ours"].append(await ours_rate(store, writers, RUN_SECONDS))
            rates[str(writers)] = runs
            print(
                f"  {writers} writer(s): ours {_runs(runs['ours'])} | peer {_runs(runs['peer'])}",
                flush=True,
            )
        loads = await compare_loads(app, store)
        print(
            f"  load of {STREAM} events: ours {statistics.median(loads['ours']):.3f} ms | "
            f"peer {statistics.median(loads['peer']):.3f} ms",
            flush=True,
        )
        eight = rates[str(WRITERS[-1])]
        append_ratio = statistics.median(eight["ours"]) / statistics.median(eight["peer"])
        load_ratio = statistics.median(loads["peer"]) / statistics.median(loads["ours"])
        if options.profile and append_ratio < GOAL:
            sampling = asyncio.create_task(
                record(os.getpid(), 3, "bench process (our appends, 8 writers)", idle=True)
            )
            await asyncio.sleep(0.3)
            await ours_rate(store, 8, 3)
            profiles["appends"] = (await sampling).to_json()
        if options.profile and load_ratio < GOAL:
            profiles["load"] = (await profile_loads(store)).to_json() | {
                "round_trips_ms": await round_trips(ours_db.service_url, store)
            }
        for profile in profiles.values():
            print(_profile_text(profile), flush=True)
            if "round_trips_ms" in profile:
                print(
                    "  median ms of the load's queries alone, from plain asyncpg: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in profile["round_trips_ms"].items()),
                    flush=True,
                )
    finally:
        await pool.close()
        app.close()
    rows = [
        Row(
            7,
            f"Appends/s, {writers} writer{'s' if writers > 1 else ''}",
            statistics.median(rates[str(writers)]["ours"]),
            statistics.median(rates[str(writers)]["peer"]),
            "eventsourcing",
            "/s",
            goal=f"≥ {GOAL:.0f}x baseline" if writers == WRITERS[-1] else "",
            met=append_ratio >= GOAL if writers == WRITERS[-1] else None,
        )
        for writers in WRITERS
    ]
    rows.append(
        Row(
            7,
            f"Load an aggregate of {STREAM} events, median",
            statistics.median(loads["ours"]),
            statistics.median(loads["peer"]),
            "eventsourcing",
            "ms",
            higher_is_better=False,
            goal=f"≤ 1/{GOAL:.0f} of baseline",
            met=load_ratio >= GOAL,
        )
    )
    data = {"append_rates": rates, "load_ms": loads}
    return PartResult("peer", 7, "The eventsourcing library", rows, data, profiles=profiles)


async def compare_loads(app: Accounts, store: EventStore) -> dict[str, list[float]]:
    account = Account(email="user0@example.com")
    for n in range(STREAM - 1):
        account.change_email(f"user{n + 1}@example.com", account.email)
    app.save(account)
    repository = Repository(store, EmailChanges(), snapshot_keys(), snapshot_every=100)
    stream = await seed_stream(repository, STREAM)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for i in range(LOADS + WARMUP):
        start = time.perf_counter()
        theirs: Account = app.repository.get(account.id)
        middle = time.perf_counter()
        loaded = await repository.load(stream)
        end = time.perf_counter()
        assert theirs.version == STREAM and loaded.version == STREAM
        if i >= WARMUP:
            times["peer"].append((middle - start) * 1000)
            times["ours"].append((end - middle) * 1000)
    return times


async def round_trips(url: str, store: EventStore, count: int = 300) -> dict[str, float]:
    """Median ms of the two queries a load sends (snapshot, then events), sent from a
    plain asyncpg pool without decoding: the floor of a load made of two round trips."""
    repository = Repository(store, EmailChanges(), snapshot_keys(), snapshot_every=100)
    stream = await seed_stream(repository, STREAM)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    times: dict[str, list[float]] = {"snapshot query": [], "events query": [], "both": []}
    try:
        for _ in range(count):
            start = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchrow(_SNAPSHOT, stream, EmailChanges.snapshot_type)
            middle = time.perf_counter()
            async with pool.acquire() as conn:
                rows = await conn.fetch(_STREAM_EVENTS, stream, 0)
            end = time.perf_counter()
            assert len(rows) == STREAM
            times["snapshot query"].append((middle - start) * 1000)
            times["events query"].append((end - middle) * 1000)
            times["both"].append((end - start) * 1000)
    finally:
        await pool.close()
    return {name: statistics.median(values) for name, values in times.items()}


async def profile_loads(store: EventStore) -> Profile:
    repository = Repository(store, EmailChanges(), snapshot_keys(), snapshot_every=100)
    stream = await seed_stream(repository, STREAM)
    sampling = asyncio.create_task(
        record(os.getpid(), 3, f"bench process (our loads of {STREAM})", idle=True)
    )
    await asyncio.sleep(0.3)
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline:
        await repository.load(stream)
    return await sampling


def _profile_text(raw: Mapping[str, Any]) -> str:
    return Profile.from_json(raw).text()


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


def plot(data: Mapping[str, Any], path: Path) -> None:
    fig, (append_ax, load_ax) = plots.figure(2)
    rates = data["append_rates"]
    plots.bars(
        append_ax,
        [f"{w} writer{'s' if w != '1' else ''}" for w in rates],
        [statistics.median(r["ours"]) for r in rates.values()],
        [statistics.median(r["peer"]) for r in rates.values()],
        ours_label="twofa event store",
        baseline_label="eventsourcing (PostgreSQL)",
        unit="appends/s",
        title="Appends, one event per transaction",
    )
    loads = data["load_ms"]
    load_ax.boxplot(
        [loads["ours"], loads["peer"]], tick_labels=["twofa", "eventsourcing"], showfliers=False
    )
    load_ax.set_ylabel("ms per load")
    load_ax.set_ylim(bottom=0)
    p99 = {k: percentile(v, 0.99) for k, v in loads.items()}
    load_ax.set_title(
        f"Load of {STREAM} events (p99: {p99['ours']:.2f} vs {p99['peer']:.2f} ms)", fontsize=10
    )
    plots.save(fig, path, "7. Beside the eventsourcing library, same PostgreSQL")


PART = Part("peer", 7, "The eventsourcing library", False, run, plot)
