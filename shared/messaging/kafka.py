"""Kafka clients through aiokafka, set up the way twofa needs them.

No idempotent producer and no transactions (the embedded broker has neither, and the
design does not need them: the store is the outbox, consumers deduplicate by event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["create_consumer", "create_producer", "ensure_topics"]

log = logging.getLogger(__name__)


def create_producer(bootstrap_servers: str, *, client_id: str = "twofa") -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica before it counts a send as done."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=15_000,
    )


def create_consumer(
    bootstrap_servers: str,
    topics: list[str],
    *,
    group_id: str,
    fetch_max_wait_ms: int,
    client_id: str = "twofa",
) -> AIOKafkaConsumer:
    """A group member that commits offsets only when told to (after its work committed)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        isolation_level="read_uncommitted",
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    *,
    partitions: int = 4,
    replication_factor: int = 1,
    wait_seconds: float = 30.0,
) -> None:
    """Create the topics that do not exist yet; an existing topic is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(
                    [NewTopic(t, partitions, replication_factor) for t in missing]
                )
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()
