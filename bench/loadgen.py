"""An open-model load generator and the lean HTTP/1.1 client it drives.

Open model: request ``i`` of a run is due at ``start + i / rate`` whatever happened to
the ones before it, and its latency is measured from that due time, not from when it
left. A server that stalls therefore shows its stall in every request that was due
meanwhile (no coordinated omission). A run is bounded twice: by its count, and by each
request's timeout, after which it is cancelled and counted as timed out. Percentiles
count every request: one that failed or timed out counts as taking its whole timeout
(a refused or lost request is not a fast one), so a run cannot look faster by failing.

The client keeps a pool of keep-alive connections to one loopback address and speaks
just enough HTTP/1.1 for twofa's JSON answers (``Content-Length`` bodies). It exists
because httpx spends several times the CPU per request, and on two cores a generator
that busy would measure itself rather than the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Call", "HttpClient", "Outcome", "Response", "Run", "open_model", "percentile"]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def reason(self) -> str:
        """``"401 invalid_code"``: the status and the problem code, for failure counts."""
        try:
            code = orjson.loads(self.body).get("code", "")
        except (orjson.JSONDecodeError, AttributeError):
            code = ""
        return f"{self.status} {code}".strip()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.open = transport, True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # chunked or close-delimited: not something these endpoints send
            self.waiter.set_exception(ValueError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        response = Response(int(self.buffer[9:12]), bytes(self.buffer[end + 4 : total]))
        del self.buffer[:total]
        self.waiter.set_result(response)

    async def exchange(self, request: bytes) -> Response:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Up to ``connections`` keep-alive connections to ``127.0.0.1:port``, FIFO waiting."""

    def __init__(self, port: int, *, connections: int = 64, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.limit = host, port, connections
        self._idle: deque[_Connection] = deque()
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()
        self._count = 0
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.open:
                return conn
            self._count -= 1
        if self._count < self.limit:
            self._count += 1
        else:  # wait for a connection, or for a slot (None) another request gave up
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:  # timed out while waiting: pass on what came
                if waiter.done() and not waiter.cancelled():
                    self._release_slot(waiter.result())
                raise
            if handed is not None:
                return handed
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port
            )
        except BaseException:
            self._count -= 1
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        self._release_slot(conn if conn.open else None)

    def _release_slot(self, handed: _Connection | None) -> None:
        """Hand a connection (or, with None, its slot) to the next waiter, or keep it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(handed)  # the connection, or its slot to open a new one
                return
        if handed is not None:
            self._idle.append(handed)
        else:
            self._count -= 1

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body:
            extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        message = head + extra.encode() + b"\r\n" + body
        conn = await self._acquire()
        try:
            return await conn.exchange(message)
        except BaseException:
            conn.close()
            conn.open = False
            raise
        finally:
            self._release(conn)

    async def get(self, path: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return await self.request("GET", path, headers=headers)

    async def post_json(
        self, path: str, document: Any, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return await self.request("POST", path, orjson.dumps(document), headers)

    async def close(self) -> None:
        for waiter in self._waiting:
            if not waiter.done():
                waiter.cancel()
        while self._idle:
            self._idle.pop().close()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# A call returns None when it succeeded, or a short reason ("401 invalid_code").
Call = Callable[[int], Awaitable[str | None]]


TIMED_OUT = "timed out"


@dataclass(slots=True)
class Outcome:
    due: float
    latency: float
    failure: str | None


@dataclass(slots=True)
class Run:
    """What one fixed-rate run did; latencies in seconds from each request's due time."""

    rate: float
    count: int
    timeout: float = math.inf  # each request's, from its due time
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0  # first due time to the last completion
    max_send_lag: float = 0.0  # how late the generator itself launched a request
    start: float = 0.0  # the first due time (perf_counter)
    client_cpu: float = 0.0  # CPU seconds this process (the generator) spent on the run

    @property
    def latencies(self) -> list[float]:
        """Every request's latency; a failed or timed-out one at its whole timeout."""
        return [
            o.latency if o.failure is None else max(o.latency, self.timeout) for o in self.outcomes
        ]

    @property
    def timed_out(self) -> int:
        return sum(1 for o in self.outcomes if o.failure == TIMED_OUT)

    @property
    def ok(self) -> int:
        return sum(1 for o in self.outcomes if o.failure is None)

    @property
    def failures(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.failure is not None:
                counts[o.failure] = counts.get(o.failure, 0) + 1
        return counts

    @property
    def throughput(self) -> float:
        """Successful requests per second over the run (first due to last done)."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def steady_throughput(self, skip: float) -> float:
        """Successes per second completed between ``skip`` seconds in and the last due
        time: the rate a saturated server sustains, without the ramp and the drain."""
        first, last = self.start + skip, self.start + (self.count - 1) / self.rate
        if last <= first:
            return self.throughput
        done = sum(
            1 for o in self.outcomes if o.failure is None and first <= o.due + o.latency <= last
        )
        return done / (last - first)

    def quantile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "offered_rate": self.rate,
            "requests": self.count,
            "ok": self.ok,
            "failures": self.failures,
            "throughput": self.throughput,
            "steady_throughput": self.steady_throughput(min(2.0, self.count / self.rate / 4)),
            "p50_ms": self.quantile_ms(0.50),
            "p90_ms": self.quantile_ms(0.90),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": self.quantile_ms(1.0),
            "elapsed_s": self.elapsed,
            "max_send_lag_ms": self.max_send_lag * 1000,
            "client_cpu_ms_per_request": self.client_cpu / self.count * 1000 if self.count else 0,
        }


async def open_model(rate: float, count: int, call: Call, *, request_timeout: float = 10.0) -> Run:
    """Start ``call(i)`` at ``i / rate`` seconds for i < count; cancel each one still
    running ``request_timeout`` seconds after it was due (counted as timed out)."""
    run = Run(rate, count, request_timeout)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    last_done = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal last_done
        try:
            async with asyncio.timeout_at(
                loop.time() + due + request_timeout - time.perf_counter()
            ):
                failure = await call(i)
        except TimeoutError:
            failure = TIMED_OUT
        except Exception as exc:  # a refused connection, a broken answer: a failure
            failure = type(exc).__name__
        done = time.perf_counter()
        last_done = max(last_done, done)
        run.outcomes.append(Outcome(due, done - due, failure))

    cpu_before = time.process_time()
    start = run.start = time.perf_counter() + 0.01
    for i in range(count):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0.0005:
            await asyncio.sleep(wait)
        run.max_send_lag = max(run.max_send_lag, time.perf_counter() - due)
        task = loop.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:  # each ends by its own timeout
        await asyncio.gather(*tasks)
    run.elapsed = (last_done or time.perf_counter()) - start
    run.client_cpu = time.process_time() - cpu_before
    return run
