"""Running parts of the suite on one stack, and writing what they found."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from bench.parts import Options, Part
from bench.parts.appends import PART as APPENDS
from bench.parts.latency import PART as LATENCY
from bench.parts.loads import PART as LOADS
from bench.parts.login import PART as LOGIN
from bench.parts.otp import PART as OTP
from bench.parts.peer import PART as PEER
from bench.parts.pipeline import PART as PIPELINE
from bench.report import RESULTS, PartResult, environment, load_average, markdown, write_outputs
from bench.stack import Stack

__all__ = ["PARTS", "run_parts"]

PARTS: dict[str, Part] = {p.name: p for p in (LOGIN, OTP, APPENDS, LOADS, LATENCY, PIPELINE, PEER)}
PLOTTERS = {name: part.plot for name, part in PARTS.items()}


async def _postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def run_parts(parts: Sequence[Part], options: Options) -> int:
    """Run ``parts`` in order on one stack; 0 when every part finished, else 1."""
    started = time.perf_counter()
    failed: list[str] = []
    fresh: list[PartResult] = []
    with Stack(broker=any(p.needs_broker for p in parts)) as stack:
        env = environment(await _postgres_version(stack.admin_url))
        print(
            f"twofa bench: {', '.join(p.name for p in parts)} on {env['cpus']} x {env['cpu']}, "
            f"PostgreSQL {env['postgres']}",
            flush=True,
        )
        for part in parts:
            print(f"\n[{part.figure}] {part.title} ({part.name})", flush=True)
            before, clock = load_average(), time.perf_counter()
            try:
                result = await part.run(stack, options)
            except Exception:
                traceback.print_exc()
                failed.append(part.name)
                continue
            result.started = datetime.now(UTC).isoformat(timespec="seconds")
            result.seconds = round(time.perf_counter() - clock, 1)
            result.load_average = [before, load_average()]
            print(f"  ({result.seconds:.0f} s)", flush=True)
            fresh.append(result)
            write_outputs([result], env, PLOTTERS)
    print("\n" + markdown(fresh, env))
    print(f"\nwall time {time.perf_counter() - started:.0f} s; results in {RESULTS}/")
    if failed:
        print(f"FAILED parts: {', '.join(failed)}")
        return 1
    return 0
