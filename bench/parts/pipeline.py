"""Figure 6: the audit pipeline's throughput, stage by stage, each against its floor.

- Relay: ``twofa relay`` publishing a store of ``EVENTS`` committed events to a fresh
  topic, events/s from its first saved checkpoint to its last (polled every 10 ms);
  baseline: a bare aiokafka producer (the relay's settings) sending the same records
  (signed beforehand, as the relay signs them), all in flight at once. Three runs each,
  interleaved; medians.
- Ingest: ``twofa serve audit`` consuming that topic into its hash-chained log, entries/s
  from the first entry on (at most ``INGEST_WINDOW`` seconds); baseline: a bare aiokafka
  consumer (same settings, no decoding, no database) reading the same topic.
- Rebuild: ``services.audit.usecases.rebuild`` (what ``twofa audit rebuild`` runs) over a
  store of ``REBUILD_EVENTS`` events into an empty log; baseline: the same ordered
  SELECT in pages of 500 with orjson decoding of both JSON columns, on plain asyncpg
  (``bench/rawread.py``).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import statistics
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from bench import plots
from bench.parts import Options, Part
from bench.profiling import record
from bench.rawread import read_everything
from bench.report import PartResult, Row
from bench.seed import bounded, login_events
from bench.stack import Database, Stack
from services.audit.usecases import rebuild
from shared.eventstore.envelope import NewEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import START, Checkpoint, EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.kafka import create_consumer, create_producer
from shared.messaging.signing import EventSigner
from shared.platform.db import create_pool

EVENTS = 20_000
REBUILD_EVENTS = 10_000
PER_APPEND = 5
RUNS = 3
INGEST_WINDOW = 15.0
RELAY_GOAL = 10_000.0
INGEST_NEEDED = 1_000.0  # figure 5's higher rate: below it, the audit log falls behind
REBUILD_GOAL = 0.5
PAGE = 500


async def seed(url: str, count: int) -> None:
    """``count`` public events, ``PER_APPEND`` per append on account streams."""
    pool = await create_pool(url, min_size=4, max_size=16)
    store = EventStore(pool, REGISTRY)

    def job(n: int) -> Any:
        async def append() -> None:
            events = [NewEvent(e) for k in range(PER_APPEND) for e in login_events(n + k)]
            await store.append(f"account-{uuid.uuid4()}", events, 0)

        return append

    try:
        await bounded(job(n) for n in range(0, count, PER_APPEND))
    finally:
        await pool.close()


class Progress:
    """How far the relay got: committed events up to its checkpoint."""

    def __init__(self, order: list[tuple[int, int]]) -> None:
        self.order = order  # (transaction id, position) of every event, in commit order

    @classmethod
    async def of(cls, conn: asyncpg.Connection) -> Progress:
        rows = await conn.fetch(
            "SELECT transaction_id::text AS txid, position FROM events"
            " ORDER BY transaction_id, position"
        )
        return cls([(int(r["txid"]), r["position"]) for r in rows])

    def done_at(self, checkpoint: Checkpoint) -> int:
        return bisect.bisect_right(self.order, (checkpoint.transaction_id, checkpoint.position))


async def relay_rate(
    stack: Stack, database: Database, progress: Progress, conn: asyncpg.Connection
) -> tuple[float, str]:
    """One relay run to a fresh topic: (events/s, the topic)."""
    topic = await stack.topic()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    relay = stack.relay(stack.env(database, TWOFA_KAFKA_TOPIC=topic, TWOFA_RELAY_NAME=name))
    total = len(progress.order)
    first: tuple[float, int] | None = None
    last = (0.0, 0)
    deadline = time.perf_counter() + 90
    try:
        while last[1] < total and time.perf_counter() < deadline:
            if relay.popen.poll() is not None:
                raise RuntimeError(f"the relay exited:\n{relay.log_tail()}")
            row = await conn.fetchrow(
                "SELECT transaction_id::text AS txid, position FROM relay_checkpoints"
                " WHERE name = $1",
                name,
            )
            now = time.perf_counter()
            if row is not None:
                done = progress.done_at(Checkpoint(int(row["txid"]), row["position"]))
                if first is None:
                    first = (now, done)
                if done != last[1]:
                    last = (now, done)
            await asyncio.sleep(0.01)
    finally:
        stack.stop(relay)
    if first is None or last[0] <= first[0]:
        return 0.0, topic
    return (last[1] - first[1]) / (last[0] - first[0]), topic


async def raw_produce_rate(
    bootstrap: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> float:
    """Events/s of a bare producer sending ``records`` with all of them in flight."""
    topic = f"twofa.bench.raw.{uuid.uuid4().hex[:8]}"
    producer = create_producer(bootstrap, client_id="bench-raw")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"warm")  # creates the topic
        start = time.perf_counter()
        pending = [
            await producer.send(topic, body, key=key, headers=headers)
            for body, key, headers in records
        ]
        await asyncio.gather(*pending)
        return len(records) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def integration_records(
    store: EventStore, signer: EventSigner
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Every record the relay publishes from ``store``, signed: value, key, headers."""
    out = []
    checkpoint = START
    while batch := await store.read_all(checkpoint, PAGE):
        for recorded in batch:
            public = PUBLIC_EVENTS.to_integration(recorded)
            if public is not None:
                signed = signer.sign(public)
                out.append((signed.value, public.key, signed.headers))
        checkpoint = Checkpoint(batch[-1].transaction_id, batch[-1].position)
    return out


async def ingest_rate(
    stack: Stack, database: Database, topic: str, conn: asyncpg.Connection, expected: int
) -> tuple[float, int]:
    """``twofa serve audit`` on ``topic``: (entries/s from its first entry, entries).

    Not waiting for ``/readyz``: that answers 200 only once it caught up with the topic,
    which is the very ingestion measured here."""
    env = stack.env(
        database, TWOFA_KAFKA_TOPIC=topic, TWOFA_KAFKA_GROUP_PREFIX=f"b{uuid.uuid4().hex[:8]}"
    )
    audit = await stack.serve("audit", env, ready=False)
    first: tuple[float, int] | None = None
    count = 0
    try:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            count = int(await conn.fetchval("SELECT count(*) FROM audit.entries"))
            now = time.perf_counter()
            if count and first is None:
                first, deadline = (now, count), now + INGEST_WINDOW
            if count >= expected:
                break
            await asyncio.sleep(0.1)
    finally:
        stack.stop(audit)
    if first is None or now <= first[0]:
        return 0.0, count
    return (count - first[1]) / (now - first[0]), count


async def bare_consume_rate(bootstrap: str, topic: str, expected: int) -> float:
    """Records/s of a bare consumer reading ``topic`` from the start (no work per record)."""
    consumer = create_consumer(
        bootstrap, [topic], group_id=f"bench-bare-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        count, first = 0, None
        deadline = time.perf_counter() + 60
        while count < expected and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=200)
            got = sum(len(records) for records in batches.values())
            if got and first is None:
                first = (time.perf_counter(), got)
            count += got
        if first is None:
            return 0.0
        return (count - first[1]) / (time.perf_counter() - first[0])
    finally:
        await consumer.stop()


async def raw_read_rate(pool: asyncpg.Pool, expected: int) -> float:
    start = time.perf_counter()
    count = await read_everything(pool, "events", PAGE)
    if count != expected:
        raise RuntimeError(f"the raw read returned {count} of {expected} events")
    return count / (time.perf_counter() - start)


async def rebuild_rate(url: str) -> tuple[float, int, int]:
    pool = await create_pool(url, min_size=2, max_size=4)
    try:
        start = time.perf_counter()
        read, added = await rebuild(EventStore(pool, REGISTRY))
        return read / (time.perf_counter() - start), read, added
    finally:
        await pool.close()


async def run(stack: Stack, options: Options) -> PartResult:
    main, other = await stack.database(), await stack.database()
    await seed(main.admin_url, EVENTS)
    await seed(other.admin_url, REBUILD_EVENTS)
    profiles: dict[str, Any] = {}
    conn = await asyncpg.connect(main.admin_url)
    try:
        progress = await Progress.of(conn)
        pool = await create_pool(main.admin_url, min_size=1, max_size=2)
        try:
            signer = EventSigner(stack.settings(stack.env(main)).event_signing_ring())
            records = await integration_records(EventStore(pool, REGISTRY), signer)
        finally:
            await pool.close()
        relay_runs, raw_runs, topics = [], [], []
        for _ in range(RUNS):
            rate, topic = await relay_rate(stack, main, progress, conn)
            relay_runs.append(rate)
            topics.append(topic)
            raw_runs.append(await raw_produce_rate(stack.bootstrap_servers, records))
            print(f"  relay {rate:,.0f}/s | raw produce {raw_runs[-1]:,.0f}/s", flush=True)
        bare_runs = [await bare_consume_rate(stack.bootstrap_servers, topics[0], EVENTS)]
        ingest, ingested = await ingest_rate(stack, main, topics[0], conn, EVENTS)
        bare_runs.append(await bare_consume_rate(stack.bootstrap_servers, topics[0], EVENTS))
        print(
            f"  ingest {ingest:,.0f}/s ({ingested:,} entries) | bare consume "
            f"{' '.join(f'{r:,.0f}' for r in bare_runs)}/s",
            flush=True,
        )
        if options.profile and statistics.median(relay_runs) < RELAY_GOAL:
            profiles["relay"] = await profile_relay(stack, main)
        if options.profile and ingest < INGEST_NEEDED:
            profiles["ingest"] = await profile_ingest(stack, topics[-1])
    finally:
        await conn.close()

    raw_pool = await asyncpg.create_pool(other.service_url, min_size=1, max_size=2)
    assert raw_pool is not None
    try:
        read_runs = [await raw_read_rate(raw_pool, REBUILD_EVENTS) for _ in range(2)]
        rebuilt, read, added = await rebuild_rate(other.login("audit"))
        read_runs.append(await raw_read_rate(raw_pool, REBUILD_EVENTS))
    finally:
        await raw_pool.close()
    raw_read = statistics.median(read_runs)
    print(
        f"  rebuild {rebuilt:,.0f}/s ({read:,} read, {added:,} added) | raw SELECT "
        f"{' '.join(f'{r:,.0f}' for r in read_runs)}/s",
        flush=True,
    )
    if options.profile and rebuilt < REBUILD_GOAL * raw_read:
        profiles["rebuild"] = await profile_rebuild(stack, rebuilt)

    relay, raw = statistics.median(relay_runs), statistics.median(raw_runs)
    bare = statistics.median(bare_runs)
    rows = [
        Row(
            6,
            "Relay store → broker, events/s",
            relay,
            raw,
            "pipelined aiokafka produce",
            "/s",
            goal=f"≥ {RELAY_GOAL:,.0f}/s",
            met=relay >= RELAY_GOAL,
        ),
        Row(
            6,
            "Audit ingest into the hash-chained log, events/s",
            ingest,
            bare,
            "bare aiokafka consume",
            "/s",
            note=f"{ingested:,} of {EVENTS:,} in the window" if ingested < EVENTS else "",
        ),
        Row(
            6,
            "Audit rebuild from the event store, events/s",
            rebuilt,
            raw_read,
            "ordered SELECT + orjson",
            "/s",
            goal=f"≥ {REBUILD_GOAL:.0%} of baseline",
            met=rebuilt >= REBUILD_GOAL * raw_read and added == REBUILD_EVENTS,
            note="" if added == REBUILD_EVENTS else f"added {added:,} of {REBUILD_EVENTS:,}",
        ),
    ]
    data = {
        "relay": {"ours": relay_runs, "baseline": raw_runs},
        "ingest": {"ours": [ingest], "baseline": bare_runs, "entries": ingested},
        "rebuild": {"ours": [rebuilt], "baseline": read_runs, "read": read, "added": added},
        "events": EVENTS,
        "rebuild_events": REBUILD_EVENTS,
    }
    return PartResult("pipeline", 6, "Audit pipeline throughput", rows, data, profiles=profiles)


async def profile_relay(stack: Stack, database: Database) -> dict[str, Any]:
    """py-spy on a relay process publishing the whole store again (a new relay name)."""
    topic = await stack.topic()
    env = stack.env(database, TWOFA_KAFKA_TOPIC=topic, TWOFA_RELAY_NAME=f"p-{uuid.uuid4().hex}")
    relay = stack.relay(env)
    try:
        await asyncio.sleep(1.5)  # imports and connections, not the relay's work
        profile = await record(relay.pid, 2, "relay process")
    finally:
        stack.stop(relay)
    print(profile.text(), flush=True)
    return profile.to_json()


async def profile_ingest(stack: Stack, topic: str, seconds: float = 4.0) -> dict[str, Any]:
    """py-spy on an audit process ingesting ``topic`` into a fresh database."""
    database = await stack.database()
    env = stack.env(
        database, TWOFA_KAFKA_TOPIC=topic, TWOFA_KAFKA_GROUP_PREFIX=f"p{uuid.uuid4().hex[:8]}"
    )
    audit = await stack.serve("audit", env, ready=False)  # profiled while it catches up
    conn = await asyncpg.connect(database.admin_url)
    try:
        deadline = time.perf_counter() + 30
        while not await conn.fetchval("SELECT count(*) FROM audit.entries"):
            if time.perf_counter() > deadline:
                raise RuntimeError("the audit process ingested nothing in 30 s")
            await asyncio.sleep(0.1)
        profile = await record(audit.pid, seconds, "audit process (ingest)")
    finally:
        await conn.close()
        stack.stop(audit)
    print(profile.text(), flush=True)
    return profile.to_json()


async def profile_rebuild(stack: Stack, rate: float) -> dict[str, Any]:
    """py-spy on this process (waiting included) while it rebuilds a fresh store."""
    database = await stack.database()
    await seed(database.admin_url, 4_000)
    seconds = max(2.0, 4_000 / max(rate, 1.0) * 0.9)
    sampling = asyncio.create_task(
        record(os.getpid(), seconds, "bench process (audit rebuild)", idle=True)
    )
    await asyncio.sleep(0.3)
    await rebuild_rate(database.login("audit"))
    profile = await sampling
    print(profile.text(), flush=True)
    return profile.to_json()


def plot(data: Mapping[str, Any], path: Path) -> None:
    fig, axes = plots.figure(3, width=4.2)
    for ax, key, title, ours_label, base_label in (
        (axes[0], "relay", "Relay", "twofa relay", "raw produce"),
        (axes[1], "ingest", "Audit ingest", "audit service", "bare consume"),
        (axes[2], "rebuild", "Audit rebuild", "rebuild", "raw SELECT"),
    ):
        plots.bars(
            ax,
            [""],
            [statistics.median(data[key]["ours"])],
            [statistics.median(data[key]["baseline"])],
            ours_label=ours_label,
            baseline_label=base_label,
            unit="events/s",
            title=title,
            log=True,
        )
    plots.save(fig, path, "6. Audit pipeline throughput vs bare clients")


PART = Part("pipeline", 6, "Audit pipeline throughput", True, run, plot)
