"""Figure 4: loading a ``twofactor`` stream of about 10,000 events against one of 10.

The streams hold what a busy account's two-factor stream holds (enabled, then accepted
and failed codes), saved 10 events at a time through ``Repository`` with the services'
snapshot interval. A load costs the last snapshot plus the events after it, so one long
stream would say little: the long streams are 10,000 events plus a tail of 0, 11, 22,
... 99 events, the whole snapshot cycle, and the goal is judged on the median over the
cycle and on its worst tail alike. The short stream has no snapshot and folds its 10
events. Loads go through a pool on the services' role, as the auth service's do; they
are interleaved, 10 of each first as a warm-up.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import statistics
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import plots
from bench.emailchanges import snapshot_keys
from bench.loadgen import percentile
from bench.parts import Options, Part
from bench.profiling import record
from bench.report import PartResult, Row
from bench.stack import Stack
from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.twofactor.state import TwoFactorState
from shared.eventstore.envelope import NewEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.repository import Repository
from shared.eventstore.snapshots import TwoFactorFold
from shared.eventstore.store import EventStore
from shared.platform.config import Settings
from shared.platform.db import create_pool
from shared.security.recovery import RecoveryCodeHasher, new_codes

GOAL = 2.0
LONG, SHORT = 10_000, 10
TAILS = tuple(range(0, 100, 11))  # 0, 11, ... 99: events after the last snapshot
SAVE_BATCH = 10
LOADS = 200
WARMUP = 10


def twofactor_events(count: int) -> list[DomainEvent]:
    """Enrolment, then accepted codes with a failed one now and then."""
    now = datetime.now(UTC)
    hasher = RecoveryCodeHasher(secrets.token_bytes(32))
    secret = base64.b64encode(os.urandom(60)).decode()  # the size of a real ciphertext
    events: list[DomainEvent] = [
        ev.EnrolmentStarted(encrypted_secret=secret, expires_at=now + timedelta(minutes=10)),
        ev.TwoFactorEnabled(
            session_id=uuid.uuid4().hex,
            enabled_at=now,
            time_step=1,
            recovery_code_hashes=tuple(hasher.hash(c) for c in new_codes()),
        ),
    ]
    for n in range(count - 2):
        if n % 20 == 19:
            events.append(
                ev.OtpFailed(
                    method="totp", purpose="login", reason="invalid_code", consecutive_failures=1
                )
            )
        else:
            events.append(ev.OtpVerified(time_step=n + 2, purpose="login"))
    return events


async def seed(repository: Repository[TwoFactorState], count: int) -> str:
    stream_id = f"twofactor-{uuid.uuid4()}"
    events = twofactor_events(count)
    loaded = await repository.load(stream_id)
    for start in range(0, count, SAVE_BATCH):
        batch = [NewEvent(e) for e in events[start : start + SAVE_BATCH]]
        loaded = await repository.save(stream_id, loaded, batch)
    return stream_id


async def load_ms(repository: Repository[TwoFactorState], stream_id: str, length: int) -> float:
    start = time.perf_counter()
    loaded = await repository.load(stream_id)
    elapsed = (time.perf_counter() - start) * 1000
    assert loaded.version == length and loaded.state.enabled, (stream_id, loaded.version)
    return elapsed


async def run(stack: Stack, options: Options) -> PartResult:
    database = await stack.database()
    every = Settings.model_fields["snapshot_every"].default
    pool = await create_pool(database.service_url, min_size=2, max_size=4)
    profiles: dict[str, Any] = {}
    try:
        repository = Repository(
            EventStore(pool, REGISTRY), TwoFactorFold(), snapshot_keys(), snapshot_every=every
        )
        lengths = (SHORT, *(LONG + tail for tail in TAILS))
        streams = {n: await seed(repository, n) for n in lengths}
        times: dict[int, list[float]] = {n: [] for n in streams}
        for i in range(LOADS + WARMUP):
            for length, stream_id in streams.items():
                elapsed = await load_ms(repository, stream_id, length)
                if i >= WARMUP:
                    times[length].append(elapsed)
        medians = {tail: statistics.median(times[LONG + tail]) for tail in TAILS}
        ratio = max(medians.values()) / statistics.median(times[SHORT])
        worst = LONG + max(medians, key=medians.__getitem__)
        if options.profile and ratio > GOAL:
            sampling = asyncio.create_task(
                record(os.getpid(), 3, f"bench process (loads of {worst:,})", idle=True)
            )
            await asyncio.sleep(0.3)
            deadline = time.perf_counter() + 3
            while time.perf_counter() < deadline:
                await load_ms(repository, streams[worst], worst)
            profile = await sampling
            profiles["loads"] = profile.to_json()
            print(profile.text(), flush=True)
    finally:
        await pool.close()
    for length, values in times.items():
        print(
            f"  {length:>6,} events: median {statistics.median(values):.2f} ms, "
            f"p99 {percentile(values, 0.99):.2f} ms",
            flush=True,
        )
    short = statistics.median(times[SHORT])
    cycle = statistics.median(medians.values())
    rows = [
        Row(
            4,
            f"Load a {LONG:,}-event twofactor stream (snapshot every {every}), median over"
            f" tails of {TAILS[0]} to {TAILS[-1]} events after the snapshot",
            cycle,
            short,
            f"a {SHORT}-event stream",
            "ms",
            higher_is_better=False,
            goal=f"≤ {GOAL:.0f}x baseline",
            met=cycle / short <= GOAL,
        ),
        Row(
            4,
            f"Load {worst:,} events ({worst - LONG} after the snapshot), the worst tail, median",
            medians[worst - LONG],
            short,
            f"a {SHORT}-event stream",
            "ms",
            higher_is_better=False,
            goal=f"≤ {GOAL:.0f}x baseline",
            met=ratio <= GOAL,
        ),
    ]
    data = {"load_ms": {str(k): v for k, v in times.items()}, "snapshot_every": every}
    return PartResult("loads", 4, "Loading a long twofactor stream", rows, data, profiles=profiles)


def plot(data: Mapping[str, Any], path: Path) -> None:
    fig, (ax,) = plots.figure(1, width=7)
    loads = data["load_ms"]
    labels = [f"{int(k):,} events" for k in loads]
    ax.boxplot(list(loads.values()), tick_labels=labels, showfliers=False)
    ax.set_ylabel("ms per load")
    ax.set_ylim(bottom=0)
    ax.set_title(f"snapshot every {data['snapshot_every']} events", fontsize=10)
    plots.save(fig, path, "4. Repository.load of a twofactor stream")


PART = Part("loads", 4, "Loading a long twofactor stream", False, run, plot)
