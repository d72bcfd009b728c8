"""The consumer loop every service uses to react to integration events.

For each record: check it (``EventVerifier``: signed by the relay, data valid against its
schema), then in one database transaction record its event id in
``processed_events`` and run the handler. A record whose id is already there is skipped,
so redelivery has no second effect. Offsets are committed to Kafka only after those
transactions committed. A record that is refused, or whose handler fails for a reason
other than an outage, goes to the dead-letter topic with the reason (``dlq_reason``) and
the error, and the loop goes on; during an outage it retries the same record instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from shared.eventstore.store import ConcurrencyError
from shared.messaging.catchup import CatchUp, follow_group
from shared.messaging.integration import IntegrationEvent, MalformedEventError
from shared.messaging.kafka import (
    PLAINTEXT,
    KafkaSecurity,
    create_consumer,
    create_producer,
    security_of,
)
from shared.messaging.signing import REFUSED, EventVerifier, RefusedEvent
from shared.platform.config import Settings
from shared.platform.outages import OUTAGES

__all__ = ["ConsumerOptions", "Delivery", "EventConsumer", "Handler", "events_consumer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where Kafka had the event: for handlers that record it (the audit log)."""

    topic: str
    partition: int
    offset: int


Handler = Callable[[asyncpg.Connection, IntegrationEvent, Delivery], Awaitable[None]]

CONSUMED = Counter("twofa_consumer_events", "Events handled", ["consumer", "outcome"])

# Worth a retry: an outage, or a transaction another one got in the way of.
_RETRYABLE = (*OUTAGES, asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    name: str
    topics: tuple[str, ...]
    dlq_topic: str
    fetch_max_wait_ms: int = 10
    max_records: int = 200
    retry_seconds: float = 0.5
    client_id: str = "twofa"


class EventConsumer:
    """Runs ``handler`` once per event id, whatever Kafka redelivers."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        bootstrap_servers: str,
        handler: Handler,
        verifier: EventVerifier,
        options: ConsumerOptions,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.pool = pool
        self.security = security
        self.bootstrap_servers = bootstrap_servers
        self.handler = handler
        self.verifier = verifier
        self.options = options
        self._consumer: AIOKafkaConsumer | None = None
        self.caught_up = CatchUp()  # with what the topics held at start, for /readyz

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` (see ``_keep_consuming``); meanwhile ``follow_group``
        tells when the group has caught up with what the topics held at start."""
        options = self.options
        watching = asyncio.create_task(
            follow_group(
                self.caught_up,
                bootstrap_servers=self.bootstrap_servers,
                group_id=options.name,
                topics=options.topics,
                stop=stop,
            )
        )
        try:
            await self._keep_consuming(stop, started)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _keep_consuming(self, stop: asyncio.Event, started: asyncio.Event | None) -> None:
        """Consume until ``stop`` is set, then commit what was done and leave the group.

        A broker that cannot be reached (at start, or lost for good mid-run) is waited
        for: the loop connects again every ``retry_seconds`` (at most 5 s apart) rather
        than ending and leaving the service without its consumer.
        """
        delay = self.options.retry_seconds
        while not stop.is_set():
            try:
                await self._consume(stop, started)
                return
            except KafkaError as exc:
                log.warning(
                    "consumer %s cannot reach the broker (%s); trying again in %.1f s",
                    self.options.name,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self, stop: asyncio.Event, started: asyncio.Event | None) -> None:
        opts = self.options
        consumer = create_consumer(
            self.bootstrap_servers,
            list(opts.topics),
            group_id=opts.name,
            fetch_max_wait_ms=opts.fetch_max_wait_ms,
            client_id=opts.client_id,
            security=self.security,
        )
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        dlq = create_producer(
            self.bootstrap_servers, client_id=opts.client_id + "-dlq", security=self.security
        )
        try:
            await dlq.start()
            self._consumer = consumer
            if started is not None:
                started.set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=opts.max_records)
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batches.items():
                    for record in records:
                        if not await self._process(record, dlq, stop):
                            break  # stopping mid-outage: this record stays uncommitted
                        offsets[tp] = record.offset + 1
                if offsets:
                    try:
                        await consumer.commit(offsets)
                    except KafkaError as exc:  # a rebalance: redelivered records are deduped
                        log.warning("consumer %s offset commit failed: %s", opts.name, exc)
        finally:
            self._consumer = None
            await dlq.stop()
            await consumer.stop()

    def assigned(self) -> set[int]:
        """The partitions this member holds right now."""
        consumer = self._consumer
        return {tp.partition for tp in consumer.assignment()} if consumer else set()

    async def lag(self) -> dict[int, int]:
        """Records behind the end of each assigned partition (for /metrics)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[int, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            lags[tp.partition] = max(0, end - await consumer.position(tp))
        return lags

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], dlq: AIOKafkaProducer, stop: asyncio.Event
    ) -> bool:
        """Handle one record; False only when stopping before it could be handled."""
        name = self.options.name
        try:
            event = self.verifier.check(record.headers, record.value)
        except RefusedEvent as exc:  # before any effect: not even a processed_events row
            REFUSED.labels(name, exc.reason).inc()
            await self._dead_letter(dlq, record, exc)
            return True
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    fresh = await conn.fetchval(
                        """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
                           ON CONFLICT DO NOTHING RETURNING true""",
                        name,
                        event.id,
                    )
                    if fresh:
                        delivery = Delivery(record.topic, record.partition, record.offset)
                        await self.handler(conn, event, delivery)
                CONSUMED.labels(name, "handled" if fresh else "duplicate").inc()
                return True
            except ConcurrencyError:
                continue  # the handler raced another writer: run it again on fresh state
            except _RETRYABLE as exc:
                log.warning("consumer %s waiting out an outage: %s", name, type(exc).__name__)
                if stop.is_set():
                    return False
                await asyncio.sleep(self.options.retry_seconds)
            except Exception as exc:
                log.exception("consumer %s could not handle event %s", name, event.id)
                await self._dead_letter(dlq, record, exc)
                return True

    async def _dead_letter(
        self, dlq: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], error: Exception
    ) -> None:
        CONSUMED.labels(self.options.name, "dead_lettered").inc()
        if isinstance(error, RefusedEvent):
            reason = error.reason
        else:
            reason = "malformed" if isinstance(error, MalformedEventError) else "handler_failed"
        headers = [(k, v) for k, v in record.headers if not k.startswith("dlq_")]
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_error", f"{type(error).__name__}: {error}"[:1000].encode()),
            ("dlq_consumer", self.options.name.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        while True:
            try:
                await dlq.send_and_wait(
                    self.options.dlq_topic, record.value, key=record.key, headers=headers
                )
                return
            except KafkaError as exc:
                log.warning("dead-letter topic unavailable (%s); retrying", exc)
                await asyncio.sleep(self.options.retry_seconds)


def events_consumer(
    settings: Settings, pool: asyncpg.Pool, group: str, handler: Handler
) -> EventConsumer:
    """A consumer of the events topic in group ``<prefix>.<group>``."""
    assert settings.kafka_bootstrap_servers is not None
    return EventConsumer(
        pool=pool,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        handler=handler,
        verifier=EventVerifier(settings.event_verify_ring()),
        options=ConsumerOptions(
            name=settings.group(group),
            topics=(settings.kafka_topic,),
            dlq_topic=settings.dlq_topic,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            client_id=f"{settings.kafka_client_id}-{group}",
        ),
        security=security_of(settings),
    )
