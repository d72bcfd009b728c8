"""Figure 5: from the commit of an event to its appearance in the audit API.

The stack is the production path: this process appends public events to the store
(one per append, as a service does, with the coalesced NOTIFY that wakes the relay) at
a fixed open-model rate; ``twofa relay`` publishes them; ``twofa serve audit`` consumes
them into its hash-chained log; and a client polls ``GET /v1/audit/events`` with a
cursor, every ``POLL_SECONDS`` while there is nothing new. An event's latency runs from
the moment its append returned (committed) to the poll response that first listed it.

The baseline is one broker hop on the same broker: a bare aiokafka producer and
consumer (the same client settings and ``fetch_max_wait_ms``), latency from the send to
the consumer's receipt, at the same rates.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import plots
from bench.loadgen import Call, HttpClient, open_model, percentile
from bench.parts import Options, Part
from bench.profiling import record
from bench.report import PartResult, Row
from bench.seed import login_events
from bench.stack import Stack
from services.audit.adapters.log_store import encode_cursor
from shared.eventstore.envelope import NewEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.kafka import create_consumer, create_producer
from shared.platform.db import create_pool
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer

P99_GOAL_MS = 100.0
RATES = ((200.0, 10.0), (1000.0, 5.0))
POLL_SECONDS = 0.02
ACCOUNTS = 400
SETTLE_SECONDS = 60.0


def security_token(signing_keys: str) -> str:
    """An access token with the ``security`` role, signed with the stack's keys."""
    moment = datetime.now(UTC)
    return TokenIssuer(SigningKeys.from_config(signing_keys, None), issuer="twofa").issue_access(
        subject=str(uuid.uuid4()),
        audience="twofa",
        session_id=uuid.uuid4().hex,
        auth_time=moment,
        amr=("pwd", "otp", "mfa"),
        acr="aal2",
        roles=("security",),
        now=moment,
    )


@dataclass(slots=True)
class Seen:
    """Commit times by event id, and when the audit API first listed each."""

    committed: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    def latencies_ms(self, ids: list[str]) -> list[float]:
        return [
            (self.seen[i] - self.committed[i]) * 1000
            for i in ids
            if i in self.seen and i in self.committed
        ]

    async def wait_for(self, ids: list[str], within: float) -> int:
        """Wait until every id was seen or ``within`` seconds passed; how many are missing."""
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            if all(i in self.seen for i in ids):
                return 0
            await asyncio.sleep(0.05)
        return sum(1 for i in ids if i not in self.seen)


async def poll(client: HttpClient, token: str, seen: Seen, stop: asyncio.Event) -> None:
    """Read the audit API forward with a cursor, noting when each event first shows."""
    after, headers = 0, [("Authorization", f"Bearer {token}")]
    while not stop.is_set():
        path = "/v1/audit/events?limit=500" + (f"&cursor={encode_cursor(after)}" if after else "")
        answer = await client.get(path, headers)
        now = time.perf_counter()
        if answer.status != 200:
            raise RuntimeError(f"audit API answered {answer.reason()}")
        items = answer.json()["items"]
        for item in items:
            seen.seen.setdefault(item["event_id"], now)
            after = max(after, item["id"])
        if len(items) < 500:
            await asyncio.sleep(POLL_SECONDS)


class Appender:
    """Appends one public event per call to one of ``ACCOUNTS`` account streams."""

    def __init__(self, store: EventStore, seen: Seen) -> None:
        self.store, self.seen = store, seen
        self.versions = {f"account-{uuid.uuid4()}": 0 for _ in range(ACCOUNTS)}
        self.idle = list(self.versions)
        self.count = 0

    def call(self, ids: list[str]) -> Call:
        """An open-model call that appends one event and notes its id in ``ids``."""

        async def append(_: int) -> str | None:
            return await self.append(ids)

        return append

    async def append(self, ids: list[str]) -> str | None:
        if not self.idle:
            return "every account stream busy"
        stream = self.idle.pop()
        try:
            events = [NewEvent(e) for e in login_events(self.count)]
            self.count += 1
            version = await self.store.append(stream, events, self.versions[stream])
            now = time.perf_counter()
            self.versions[stream] = version
            for new in events:
                self.seen.committed[str(new.event_id)] = now
                ids.append(str(new.event_id))
            return None
        finally:
            self.idle.insert(0, stream)


async def broker_hop(bootstrap: str, topic: str, rate: float, seconds: float) -> list[float]:
    """Send-to-receipt latencies (ms) of a bare producer and consumer at ``rate``."""
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    consumer = create_consumer(
        bootstrap, [topic], group_id=f"bench-hop-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=10
    )
    producer = create_producer(bootstrap, client_id="bench-hop")
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            now = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    received.setdefault(int(rec.value), now)

    task = asyncio.create_task(consume())
    try:
        # The group join and first fetch: send until one comes back.
        warm, deadline = -1, time.perf_counter() + SETTLE_SECONDS
        while warm not in received:
            if time.perf_counter() > deadline:
                raise RuntimeError("the bare consumer received nothing")
            sent[warm] = time.perf_counter()
            await producer.send_and_wait(topic, str(warm).encode(), key=b"warm")
            await asyncio.sleep(0.2)
        count = round(rate * seconds)

        async def send(i: int) -> str | None:
            sent[i] = time.perf_counter()
            await producer.send(topic, str(i).encode(), key=str(i % 64).encode())
            return None

        await open_model(rate, count, send)
        deadline = time.perf_counter() + 15
        while len([i for i in range(count) if i in received]) < count:
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        return [(received[i] - sent[i]) * 1000 for i in range(count) if i in received]
    finally:
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()


async def run(stack: Stack, options: Options) -> PartResult:
    database = await stack.database()
    topic = await stack.topic()
    env = stack.env(
        database,
        TWOFA_KAFKA_TOPIC=topic,
        TWOFA_RELAY_NAME=topic,
        TWOFA_KAFKA_GROUP_PREFIX=f"bench{uuid.uuid4().hex[:8]}",
    )
    relay = stack.relay(env)
    audit = await stack.serve("audit", env)
    assert audit.port is not None
    client = HttpClient(audit.port, connections=2)
    token = security_token(env["TWOFA_JWT_SIGNING_KEYS"])
    pool = await create_pool(database.service_url, min_size=4, max_size=16)
    seen, stop = Seen(), asyncio.Event()
    appender = Appender(EventStore(pool, REGISTRY, notifier=Notifier(pool)), seen)
    poller = asyncio.create_task(poll(client, token, seen, stop))
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    try:
        warm: list[str] = []
        await open_model(50, 100, appender.call(warm))
        missing = await seen.wait_for(warm, SETTLE_SECONDS)
        if poller.done():
            poller.result()
        if missing:
            raise RuntimeError(f"{missing} warm-up events never reached the audit API")
        for rate, seconds in RATES:
            ids: list[str] = []
            run_ = await open_model(rate, round(rate * seconds), appender.call(ids))
            missing = await seen.wait_for(ids, SETTLE_SECONDS)
            if poller.done():
                poller.result()  # the poller failed: say why
            latencies = seen.latencies_ms(ids)
            results[str(int(rate))] = {
                "events": len(ids),
                "missing": missing,
                "append_failures": run_.failures,
                "append_p99_ms": run_.quantile_ms(0.99),
                "latencies_ms": latencies,
            }
            print(
                f"  {rate:,.0f}/s: {len(latencies):,} events, p50 "
                f"{percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
                f"missing {missing}",
                flush=True,
            )
        first = results[str(int(RATES[0][0]))]["latencies_ms"]
        if options.profile and percentile(first, 0.99) >= P99_GOAL_MS:
            rate = RATES[0][0]
            ids = []
            samplers = [
                asyncio.create_task(record(audit.pid, 4, "audit process")),
                asyncio.create_task(record(relay.pid, 4, "relay process")),
            ]
            await asyncio.sleep(0.3)
            await open_model(rate, round(rate * 4), appender.call(ids))
            for profile in await asyncio.gather(*samplers):
                profiles[profile.target] = profile.to_json()
                print(profile.text(), flush=True)
    finally:
        stop.set()
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await client.close()
        await pool.close()
        stack.stop(audit)
        stack.stop(relay)
    hops = {}
    for rate, seconds in RATES:  # a fresh topic each: a new consumer reads from the start
        topic = await stack.topic()
        hops[str(int(rate))] = await broker_hop(stack.bootstrap_servers, topic, rate, seconds)
    rows = []
    for rate, _ in RATES:
        key = str(int(rate))
        ours, hop = results[key]["latencies_ms"], hops[key]
        note = f"{results[key]['missing']} never arrived" if results[key]["missing"] else ""
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            goal = q == 0.99 and rate == RATES[0][0]
            rows.append(
                Row(
                    5,
                    f"Commit → audit API {name} at {rate:,.0f} events/s",
                    percentile(ours, q),
                    percentile(hop, q),
                    "one broker hop",
                    "ms",
                    higher_is_better=False,
                    goal=f"< {P99_GOAL_MS:.0f} ms" if goal else "",
                    met=(percentile(ours, q) < P99_GOAL_MS and not results[key]["missing"])
                    if goal
                    else None,
                    note=note if q == 0.99 else "",
                )
            )
    data = {
        "pipeline": results,
        "broker_hop_ms": hops,
        "poll_seconds": POLL_SECONDS,
        "fetch_max_wait_ms": env["TWOFA_KAFKA_FETCH_MAX_WAIT_MS"],
    }
    return PartResult("latency", 5, "Commit to audit API latency", rows, data, profiles=profiles)


def plot(data: Mapping[str, Any], path: Path) -> None:
    fig, axes = plots.figure(len(data["pipeline"]))
    for ax, (rate, result) in zip(axes, data["pipeline"].items(), strict=True):
        for values, label, color in (
            (sorted(result["latencies_ms"]), "commit → audit API", plots.OURS),
            (sorted(data["broker_hop_ms"].get(rate, [])), "one broker hop", plots.BASELINE),
        ):
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=label, color=color)
        if rate == str(int(RATES[0][0])):
            ax.axvline(P99_GOAL_MS, color="red", linewidth=0.8, label="p99 goal")
        ax.set_xscale("log")
        ax.set_xlabel("ms")
        ax.set_ylabel("share of events")
        ax.set_title(f"{int(rate):,} events/s", fontsize=10)
        ax.legend(fontsize=8)
    plots.save(fig, path, "5. From commit to the audit API (CDF)")


PART = Part("latency", 5, "Commit to audit API latency", True, run, plot)
