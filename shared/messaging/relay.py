"""The outbox relay: committed events from the store to Kafka, at least once, in order.

One relay is active at a time, however many run: the active one holds a session-level
advisory lock on its own connection, and the standbys retry it every few seconds, so
when the active process dies (its connection closes, the lock goes with it) a standby
takes over from the checkpoint. The checkpoint is saved on that same connection and only
after the broker acknowledged every record of the batch.

With the checkpoint it saves, per partition, the least offset the topic must end at after
those acknowledgements. A broker can lose records it acknowledged (the embedded one keeps
them in memory only; a topic can be deleted and recreated): when the topic is missing,
ends before that, or acknowledges a record below it, the relay creates the topic if need
be, rewinds its checkpoint to the start and publishes everything again. It looks when it
becomes active, at every ack, and at most every ``check_interval`` seconds when it wakes.
Consumers dedupe by event id: the store stays the truth, the copies have no effect.

Every record is signed with the relay's event signing key (``shared.messaging.signing``):
consumers refuse anything else.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Gauge

from shared.eventstore.envelope import RecordedEvent
from shared.eventstore.notify import CHANNEL
from shared.eventstore.store import START, Checkpoint, EventStore
from shared.messaging.integration import IntegrationMap
from shared.messaging.kafka import (
    PLAINTEXT,
    KafkaSecurity,
    create_producer,
    create_reader,
    ensure_topics,
)
from shared.messaging.signing import EventSigner
from shared.platform.db import connect
from shared.platform.outages import OUTAGES

__all__ = ["Relay", "RelayOptions"]

log = logging.getLogger(__name__)

PUBLISHED = Counter("twofa_relay_published_events", "Integration events the broker acknowledged")
REWINDS = Counter("twofa_relay_rewinds", "Times the broker had lost records and all went again")
ACTIVE = Gauge("twofa_relay_active", "1 while this process holds the relay lock")


@dataclass(frozen=True, slots=True)
class RelayOptions:
    topic: str
    name: str = "twofa.events.v1"
    batch_size: int = 500
    poll_interval: float = 1.0
    standby_retry: float = 1.0
    client_id: str = "twofa-relay"
    check_interval: float = 2.0
    partitions: int = 4  # for creating the topic when the broker lost it
    replication_factor: int = 1


@dataclass(frozen=True, slots=True)
class Progress:
    """The checkpoint, and the least offset each partition must end at after the acks.

    That is one past the first record of the latest publish to the partition, not one
    past the last: some brokers (Tansu) report a partition's end as one past the start of
    its last record batch.
    """

    checkpoint: Checkpoint = START
    min_ends: dict[int, int] = field(default_factory=dict)

    def after(self, batch: list[RecordedEvent], acks: list[RecordMetadata]) -> Progress:
        firsts: dict[int, int] = {}
        for ack in acks:
            firsts[ack.partition] = min(firsts.get(ack.partition, ack.offset), ack.offset)
        ends = self.min_ends | {partition: first + 1 for partition, first in firsts.items()}
        return Progress(Checkpoint(batch[-1].transaction_id, batch[-1].position), ends)


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
        signer: EventSigner,
        bootstrap_servers: str,
        options: RelayOptions,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.dsn = dsn
        self.security = security
        self.store = store
        self.mapping = mapping
        self.signer = signer
        self.bootstrap_servers = bootstrap_servers
        self.options = options
        self.is_active = False
        self.published = 0
        self.rewinds = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; survive database and broker outages."""
        while not stop.is_set():
            try:
                await self._run_once(stop)
            except OUTAGES as exc:
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
            producer = create_producer(
                self.bootstrap_servers, client_id=self.options.client_id, security=self.security
            )
            # No group: it only reads the topic's metadata and end offsets.
            probe = create_reader(
                self.bootstrap_servers, client_id=self.options.client_id, security=self.security
            )
            try:
                await producer.start()
                await probe.start()
                await self._relay(conn, producer, probe, stop)
            finally:
                await probe.stop()
                await producer.stop()
        finally:
            await conn.close()

    async def _relay(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        probe: AIOKafkaConsumer,
        stop: asyncio.Event,
    ) -> None:
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        await conn.add_listener(CHANNEL, on_notify)
        loop = asyncio.get_running_loop()
        progress = await self._load(conn)
        next_check = loop.time()  # on becoming active, before publishing anything
        while not stop.is_set():
            wake.clear()
            if loop.time() >= next_check:
                progress = await self._check_topic(conn, producer, probe, progress)
                next_check = loop.time() + self.options.check_interval
            batch = await self.store.read_all(
                progress.checkpoint, self.options.batch_size, connection=conn
            )
            if batch:
                acks = await self._publish(producer, batch)
                lost = [a for a in acks if a.offset < progress.min_ends.get(a.partition, 0)]
                if lost:  # an ack below what the broker acked before: it lost those records
                    progress = await self._rewind(conn, f"partition {lost[0].partition} restarted")
                    next_check = loop.time()  # the topic itself may be missing
                    continue
                progress = progress.after(batch, acks)
                await self._save(conn, progress)
                if len(batch) == self.options.batch_size:
                    continue
            await _wait(stop, self.options.poll_interval, wake)

    async def _check_topic(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        probe: AIOKafkaConsumer,
        progress: Progress,
    ) -> Progress:
        """Create the topic if it is missing; rewind if it lost acknowledged records."""
        topic = self.options.topic
        if topic not in await probe.topics():
            await ensure_topics(
                self.bootstrap_servers,
                [topic],
                partitions=self.options.partitions,
                replication_factor=self.options.replication_factor,
                security=self.security,
            )
            if any(progress.min_ends.values()):
                return await self._rewind(conn, f"topic {topic} is gone")
            return progress
        if not any(progress.min_ends.values()):
            return progress
        partitions = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
        ends = {tp.partition: end for tp, end in (await probe.end_offsets(partitions)).items()}
        for partition, least in progress.min_ends.items():
            if ends.get(partition, 0) < least:
                reason = f"partition {partition} ends at {ends.get(partition, 0)}, below {least}"
                return await self._rewind(conn, reason)
        return progress

    async def _rewind(self, conn: asyncpg.Connection, reason: str) -> Progress:
        log.warning(
            "relay %s: the broker lost records it had acknowledged (%s);"
            " publishing every event again from the start",
            self.options.name,
            reason,
        )
        self.rewinds += 1
        REWINDS.inc()
        progress = Progress()
        await self._save(conn, progress)
        return progress

    async def _publish(
        self, producer: AIOKafkaProducer, batch: list[RecordedEvent]
    ) -> list[RecordMetadata]:
        pending = []
        for recorded in batch:
            public = self.mapping.to_integration(recorded)
            if public is None:
                continue
            signed = self.signer.sign(public)
            pending.append(
                await producer.send(
                    self.options.topic, signed.value, key=public.key, headers=signed.headers
                )
            )
        acks: list[RecordMetadata] = await asyncio.gather(*pending)  # all, or no checkpoint
        self.published += len(pending)
        PUBLISHED.inc(len(pending))
        return acks

    async def _load(self, conn: asyncpg.Connection) -> Progress:
        row = await conn.fetchrow(
            """SELECT transaction_id::text AS txid, position, min_ends
               FROM relay_checkpoints WHERE name = $1""",
            self.options.name,
        )
        if row is None:
            return Progress()
        ends = {int(p): int(end) for p, end in row["min_ends"].items()}
        return Progress(Checkpoint(int(row["txid"]), row["position"]), ends)

    async def _save(self, conn: asyncpg.Connection, progress: Progress) -> None:
        checkpoint = progress.checkpoint
        await conn.execute(
            """INSERT INTO relay_checkpoints (name, transaction_id, position, min_ends)
               VALUES ($1, $2::text::xid8, $3, $4)
               ON CONFLICT (name) DO UPDATE
               SET transaction_id = excluded.transaction_id, position = excluded.position,
                   min_ends = excluded.min_ends, updated_at = clock_timestamp()""",
            self.options.name,
            str(checkpoint.transaction_id),
            checkpoint.position,
            {str(p): end for p, end in progress.min_ends.items()},
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
