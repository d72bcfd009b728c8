"""The audit service's Kafka reaction: every event into the log, with where Kafka had it."""

from __future__ import annotations

import asyncpg

from services.audit.usecases import record
from shared.messaging.consumer import Delivery
from shared.messaging.integration import IntegrationEvent

__all__ = ["ingest"]


async def ingest(conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery) -> None:
    """The consumer loop's handler (its transaction, once per event id)."""
    await record(conn, event, partition=delivery.partition, offset=delivery.offset)
