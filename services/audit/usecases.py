"""Audit use cases: record an event at the end of its chain, rebuild, verify, summarise."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.audit.adapters import log_store
from services.audit.domain.chain import ChainWalk, Entry, extend, link
from shared.eventstore.store import START, Checkpoint, EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.integration import IntegrationEvent

__all__ = ["entry_of", "rebuild", "record", "summary", "verify"]

INGESTED = Counter("twofa_audit_ingested_events", "Events stored in the audit log", ["via"])


def entry_of(event: IntegrationEvent, chain_seq: int) -> Entry:
    """The audit entry of a public event, at ``chain_seq`` of its account's chain."""
    return Entry(
        event_id=event.id,
        chain=event.subject,
        chain_seq=chain_seq,
        event_type=event.type,
        source=event.source,
        actor=event.actor,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        occurred_at=event.time,
        store_position=event.sequence,
        dataschema=event.dataschema,
        data=event.data,
    )


async def record(
    conn: asyncpg.Connection,
    event: IntegrationEvent,
    *,
    partition: int | None = None,
    offset: int | None = None,
) -> bool:
    """Store ``event`` at the end of its account's chain; False if it is stored already.

    Runs inside the caller's transaction, holding the chain's lock, so concurrent
    writers to one chain (a rebalance, a rebuild) take turns. The entry is stored as its
    canonical bytes, made here once; an event whose data RFC 8785 cannot write (an
    integer no double holds, say) raises ``NotCanonicalError`` and is not stored.
    """
    await log_store.lock_chain(conn, event.subject)
    if await log_store.holds(conn, event.id):
        return False
    seq, prev = extend(await log_store.head(conn, event.subject))
    entry = entry_of(event, seq)
    content = entry.content()  # NotCanonicalError: the consumer sends the record to the DLQ
    await log_store.insert(
        conn, entry, content, prev, link(prev, content), partition=partition, offset=offset
    )
    INGESTED.labels("kafka" if partition is not None else "rebuild").inc()
    return True


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
                if public is not None and await record(conn, public):
                    added += 1
        read += len(recorded)
        checkpoint = Checkpoint(recorded[-1].transaction_id, recorded[-1].position)
    return read, added


async def verify(pool: asyncpg.Pool) -> dict[str, Any]:
    """Walk every chain; OK with counts and the heads' digest, or the first broken entry."""
    walk = ChainWalk()
    async for stored in log_store.walk(pool):
        walk.add(stored)
    return walk.result()


async def summary(
    pool: asyncpg.Pool, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """What a reviewer opens first: counts by type, and the accounts with most trouble."""
    return await log_store.summary(pool, since, until)
