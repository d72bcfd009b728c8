"""Audit use cases: ingest from Kafka, rebuild from the event store."""

from __future__ import annotations

import asyncpg

from services.audit import log
from shared.consumer import Delivery
from shared.domain.contract import PUBLIC_EVENTS
from shared.eventstore import START, Checkpoint, EventStore
from shared.integration import IntegrationEvent

__all__ = ["ingest", "rebuild"]


async def ingest(conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery) -> None:
    """The consumer loop's handler: store the event with where Kafka had it."""
    await log.append(conn, event, partition=delivery.partition, offset=delivery.offset)


async def rebuild(store: EventStore, batch: int = 500) -> tuple[int, int]:
    """Fill the audit log from the event store through the relay's own mapping.

    Events already in the log are skipped (by event id), so on an empty log this gives
    the entries and chains ingestion gives, and on a partial one it adds what is missing.
    Returns (events read, entries added).
    """
    read = added = 0
    checkpoint = START
    while recorded := await store.read_all(checkpoint, batch):
        async with store.pool.acquire() as conn, conn.transaction():
            for item in recorded:
                public = PUBLIC_EVENTS.to_integration(item)
                if public is not None and await log.append(conn, public):
                    added += 1
        read += len(recorded)
        checkpoint = Checkpoint(recorded[-1].transaction_id, recorded[-1].position)
    return read, added
