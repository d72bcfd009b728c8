"""The benchmarks' load generator counts failed and timed-out requests, never drops them."""

from __future__ import annotations

import asyncio

from bench.loadgen import TIMED_OUT, open_model, percentile


async def test_a_failed_request_counts_at_its_whole_timeout() -> None:
    async def call(i: int) -> str | None:
        return "503 unavailable" if i % 10 == 9 else None  # fails at once, 1 in 10

    run = await open_model(200, 100, call, request_timeout=2.0)
    assert run.ok == 90 and run.failures == {"503 unavailable": 10}
    assert len(run.latencies) == 100
    assert sorted(run.latencies)[-10:] == [2.0] * 10
    assert run.quantile_ms(0.99) == 2000.0  # the fast failures do not make p99 fast
    assert run.quantile_ms(0.50) < 100


async def test_a_request_still_running_at_its_timeout_is_cancelled_and_counted() -> None:
    async def call(i: int) -> str | None:
        if i == 0:
            await asyncio.sleep(60)  # hangs: cancelled after its 0.3 s
        return None

    run = await open_model(100, 20, call, request_timeout=0.3)
    assert run.timed_out == 1 and run.failures == {TIMED_OUT: 1}
    assert len(run.outcomes) == 20
    hung = next(o for o in run.outcomes if o.failure == TIMED_OUT)
    assert 0.3 <= hung.latency < 1.0
    assert max(run.latencies) == max(hung.latency, 0.3)
    assert run.elapsed < 2


async def test_an_exception_in_a_call_is_a_failure_of_that_request() -> None:
    async def call(i: int) -> str | None:
        if i == 3:
            raise ConnectionResetError
        return None

    run = await open_model(100, 10, call, request_timeout=1.0)
    assert run.failures == {"ConnectionResetError": 1}
    assert percentile(run.latencies, 1.0) == 1.0
