"""The outbox relay: committed events from the store to Kafka, at least once, in order.

One relay is active at a time, however many run: the active one holds a session-level
advisory lock on its own connection, and the standbys retry it every few seconds, so
when the active process dies (its connection closes, the lock goes with it) a standby
takes over from the checkpoint. The checkpoint is saved on that same connection and only
after the broker acknowledged every record of the batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from shared.db import connect
from shared.events import RecordedEvent
from shared.eventstore import START, Checkpoint, EventStore
from shared.integration import IntegrationMap
from shared.kafka import create_producer
from shared.notify import CHANNEL

__all__ = ["Relay", "RelayOptions"]

log = logging.getLogger(__name__)

PUBLISHED = Counter("twofa_relay_published_events", "Integration events the broker acknowledged")
ACTIVE = Gauge("twofa_relay_active", "1 while this process holds the relay lock")

_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, KafkaError)


@dataclass(frozen=True, slots=True)
class RelayOptions:
    topic: str
    name: str = "twofa.events.v1"
    batch_size: int = 500
    poll_interval: float = 1.0
    standby_retry: float = 1.0
    client_id: str = "twofa-relay"


def lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for a relay name."""
    return int.from_bytes(hashlib.sha256(f"twofa-relay:{name}".encode()).digest()[:8], signed=True)


class Relay:
    """Publishes the store's events to Kafka; run several, one works, the rest wait."""

    def __init__(
        self,
        *,
        dsn: str,
        store: EventStore,
        mapping: IntegrationMap,
        bootstrap_servers: str,
        options: RelayOptions,
    ) -> None:
        self.dsn = dsn
        self.store = store
        self.mapping = mapping
        self.bootstrap_servers = bootstrap_servers
        self.options = options
        self.is_active = False
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; survive database and broker outages."""
        while not stop.is_set():
            try:
                await self._run_once(stop)
            except _TRANSIENT as exc:
                log.warning("relay interrupted (%s: %s); retrying", type(exc).__name__, exc)
                await _wait(stop, self.options.standby_retry)
            finally:
                self._set_active(False)

    async def _run_once(self, stop: asyncio.Event) -> None:
        conn = await connect(self.dsn)
        try:
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", lock_key(self.options.name)
            )
            if not got:
                await _wait(stop, self.options.standby_retry)
                return
            self._set_active(True)
            log.info("relay %s is active", self.options.name)
            producer = create_producer(self.bootstrap_servers, client_id=self.options.client_id)
            await producer.start()
            try:
                await self._relay(conn, producer, stop)
            finally:
                await producer.stop()
        finally:
            await conn.close()

    async def _relay(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        await conn.add_listener(CHANNEL, on_notify)
        checkpoint = await self._load_checkpoint(conn)
        while not stop.is_set():
            wake.clear()
            batch = await self.store.read_all(checkpoint, self.options.batch_size, connection=conn)
            if batch:
                await self._publish(producer, batch)
                checkpoint = Checkpoint(batch[-1].transaction_id, batch[-1].position)
                await self._save_checkpoint(conn, checkpoint)
                if len(batch) == self.options.batch_size:
                    continue
            await _wait(stop, self.options.poll_interval, wake)

    async def _publish(self, producer: AIOKafkaProducer, batch: list[RecordedEvent]) -> None:
        pending = []
        for recorded in batch:
            public = self.mapping.to_integration(recorded)
            if public is None:
                continue
            pending.append(
                await producer.send(
                    self.options.topic, public.body(), key=public.key, headers=public.headers()
                )
            )
        await asyncio.gather(*pending)  # every ack, or an error and no checkpoint
        self.published += len(pending)
        PUBLISHED.inc(len(pending))

    async def _load_checkpoint(self, conn: asyncpg.Connection) -> Checkpoint:
        row = await conn.fetchrow(
            "SELECT transaction_id::text AS txid, position FROM relay_checkpoints WHERE name = $1",
            self.options.name,
        )
        return START if row is None else Checkpoint(int(row["txid"]), row["position"])

    async def _save_checkpoint(self, conn: asyncpg.Connection, checkpoint: Checkpoint) -> None:
        await conn.execute(
            """INSERT INTO relay_checkpoints (name, transaction_id, position)
               VALUES ($1, $2::text::xid8, $3)
               ON CONFLICT (name) DO UPDATE
               SET transaction_id = excluded.transaction_id, position = excluded.position,
                   updated_at = clock_timestamp()""",
            self.options.name,
            str(checkpoint.transaction_id),
            checkpoint.position,
        )

    def _set_active(self, active: bool) -> None:
        self.is_active = active
        ACTIVE.set(1 if active else 0)


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep up to ``seconds``, returning early when ``stop`` (or ``wake``) is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
