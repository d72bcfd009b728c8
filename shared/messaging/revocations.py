"""Session revocation learned from Kafka, for services that only verify tokens.

The auth service checks sessions against the account stream itself. Every other service
(and any internal consumer) verifies access tokens offline, so it follows the public
topic for ``session.revoked`` and ``session.ended`` — what a logout, a password change
or a 2FA change leads to — and refuses tokens of those sessions. An access token lives
``access_token_ttl`` at most, so a revocation only needs remembering that long: on
start the feed reads back just that far (``offsets_for_times``), not the whole topic.
Every process reads every partition (no consumer group): each needs all revocations.

Each record is checked first (``EventVerifier``): a forged ``session.revoked`` revokes
nothing. A refused record is counted (``twofa_consumer_refused_events`` with consumer
``revocations``) and logged, not copied to the DLQ: the feed has no producer, runs in
every replica, and the group consumers of the same topic already dead-letter it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.messaging.catchup import CatchUp, topic_partitions
from shared.messaging.integration import IntegrationEvent
from shared.messaging.kafka import PLAINTEXT, KafkaSecurity, create_reader, security_of
from shared.messaging.signing import REFUSED, EventVerifier, RefusedEvent
from shared.platform.clock import Clock
from shared.platform.config import Settings

__all__ = ["REVOKING_TYPES", "RevocationFeed", "RevokedSessions", "revocation_feed"]

log = logging.getLogger(__name__)

REVOKING_TYPES = frozenset({"session.revoked", "session.ended"})


class RevokedSessions:
    """Session ids revoked within the last ``horizon``; ``is_revoked`` feeds the verifier."""

    def __init__(
        self, horizon: timedelta, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.horizon = horizon
        self.clock = clock
        self._forget_at: dict[str, datetime] = {}

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._forget_at

    def apply(self, event: IntegrationEvent) -> None:
        if event.type not in REVOKING_TYPES:
            return
        session_id = event.data.get("session_id")
        if isinstance(session_id, str):
            self._forget_at[session_id] = event.time + self.horizon

    def prune(self) -> None:
        now = self.clock()
        for session_id in [s for s, at in self._forget_at.items() if at <= now]:
            del self._forget_at[session_id]

    def __len__(self) -> int:
        return len(self._forget_at)


class RevocationFeed:
    """Follows ``topic`` from ``horizon`` ago into a ``RevokedSessions``."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        revoked: RevokedSessions,
        verifier: EventVerifier,
        fetch_max_wait_ms: int = 10,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.topic = topic
        self.revoked = revoked
        self.verifier = verifier
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.caught_up = CatchUp()  # with the revocations of the last horizon, for /readyz

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop``; reconnect after broker outages."""
        while not stop.is_set():
            try:
                await self._follow(stop)
            except KafkaError as exc:
                log.warning("revocation feed interrupted: %s", exc)
                await asyncio.sleep(1)

    async def _follow(self, stop: asyncio.Event) -> None:
        consumer = create_reader(
            self.bootstrap_servers,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            security=self.security,
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.topic)
            consumer.assign(partitions)
            await self._rewind(consumer, partitions)
            self.caught_up.begin(await consumer.end_offsets(partitions))
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        try:
                            event = self.verifier.check(record.headers, record.value)
                        except RefusedEvent as exc:
                            REFUSED.labels("revocations", exc.reason).inc()
                            log.warning(
                                "revocation feed refused the record at %s/%d offset %d: %s",
                                record.topic,
                                record.partition,
                                record.offset,
                                exc.reason,
                            )
                            continue
                        self.revoked.apply(event)
                if not self.caught_up.done:
                    self.caught_up.observe({tp: await consumer.position(tp) for tp in partitions})
                self.revoked.prune()
        finally:
            await consumer.stop()

    async def _rewind(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        since = int((self.revoked.clock() - self.revoked.horizon).timestamp() * 1000)
        found = await consumer.offsets_for_times({tp: since for tp in partitions})
        for tp in partitions:
            hit = found.get(tp)
            if hit is None:
                await consumer.seek_to_end(tp)  # nothing that recent: only what comes next
            else:
                consumer.seek(tp, hit.offset)


def revocation_feed(
    settings: Settings, clock: Clock
) -> tuple[RevokedSessions, RevocationFeed | None]:
    """Revoked sessions for an offline token verifier, and the feed that fills them."""
    revoked = RevokedSessions(
        timedelta(seconds=settings.access_token_ttl_seconds + 60), clock=clock
    )
    if not settings.kafka_bootstrap_servers:
        return revoked, None
    return revoked, RevocationFeed(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        revoked=revoked,
        verifier=EventVerifier(settings.event_verify_ring()),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        security=security_of(settings),
    )
