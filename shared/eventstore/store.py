"""The event store: append-only streams in PostgreSQL with optimistic concurrency.

Errors::

    EventStoreError
    ├── ConcurrencyError      the stream moved past the expected version
    └── DuplicateEventError   an event id is already stored

Every append is one SQL statement, so it writes all of its events or none. Readers of
the whole store go in commit-safe order: (transaction id, position) below the oldest
transaction still running, so a transaction that took a lower position but committed
later is read after the ones that committed before it, never skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from shared.eventstore.envelope import EventMetadata, NewEvent, RecordedEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import EventRegistry

__all__ = [
    "Checkpoint",
    "ConcurrencyError",
    "DuplicateEventError",
    "EventStore",
    "EventStoreError",
    "Snapshot",
]


class EventStoreError(Exception):
    """Base of the event store's own errors."""


class ConcurrencyError(EventStoreError):
    """Another writer appended first: reload the stream and decide again."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id!r} is not at version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


class DuplicateEventError(EventStoreError):
    """An event with this id was stored already."""


class Checkpoint(NamedTuple):
    """A place in commit order: the last (transaction id, position) read."""

    transaction_id: int
    position: int


START = Checkpoint(0, 0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored snapshot: the state's exact bytes and the MAC over them (``Repository``
    makes and checks it; the store keeps the bytes as they are, in a ``bytea``)."""

    stream_version: int
    schema_version: int
    state: bytes
    key_id: str
    mac: bytes


_SELECT_EVENTS = """
SELECT position, transaction_id::text AS txid, stream_id, stream_version, event_id,
       event_type, schema_version, data, metadata, recorded_at
FROM events
"""

_APPEND = """
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata)
SELECT $1, $2 + e.ord, e.event_id, e.event_type, e.schema_version, e.data::jsonb, e.metadata::jsonb
FROM unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[]) WITH ORDINALITY
     AS e(event_id, event_type, schema_version, data, metadata, ord)
WHERE (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1) = $2
RETURNING position
"""

_READ_STREAM = (
    _SELECT_EVENTS
    + """
WHERE stream_id = $1 AND stream_version > $2
ORDER BY stream_version
"""
)

_READ_ALL = (
    _SELECT_EVENTS
    + """
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY events.transaction_id, events.position
LIMIT $3
"""
)

_SAVE_SNAPSHOT = """
INSERT INTO snapshots (stream_id, snapshot_type, stream_version, schema_version, state,
                       key_id, mac)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (stream_id, snapshot_type) DO UPDATE
SET stream_version = excluded.stream_version, schema_version = excluded.schema_version,
    state = excluded.state, key_id = excluded.key_id, mac = excluded.mac,
    recorded_at = clock_timestamp()
WHERE snapshots.stream_version < excluded.stream_version
   OR snapshots.schema_version <> excluded.schema_version
   OR snapshots.stream_version > (SELECT coalesce(max(stream_version), 0) FROM events
                                  WHERE stream_id = excluded.stream_id)
"""


class EventStore:
    """Streams of domain events in the ``events`` table, read back as typed events."""

    def __init__(
        self, pool: asyncpg.Pool, registry: EventRegistry, *, notifier: Notifier | None = None
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.notifier = notifier

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> int:
        """Append ``events`` if the stream is at ``expected_version``; return the new version.

        Version 0 means the stream must not exist yet. Raises ``ConcurrencyError`` when
        another writer got there first (never overwrites) and writes nothing then.
        """
        if not events:
            return expected_version
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        args = (
            stream_id,
            expected_version,
            [e.event_id for e in events],
            [e.event.type for e in events],
            [e.event.schema_version for e in events],
            [self.registry.encode(e.event).decode() for e in events],
            [e.metadata.to_json().decode() for e in events],
        )
        try:
            async with self._connection(connection) as conn:
                rows = await conn.fetch(_APPEND, *args)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_event_id_key":
                raise DuplicateEventError(str(exc)) from None
            raise ConcurrencyError(stream_id, expected_version) from None
        if len(rows) != len(events):
            raise ConcurrencyError(stream_id, expected_version)
        if self.notifier is not None:
            self.notifier.poke()
        return expected_version + len(events)

    async def read_stream(
        self,
        stream_id: str,
        after_version: int = 0,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events with a version above ``after_version``, in order."""
        async with self._connection(connection) as conn:
            rows = await conn.fetch(_READ_STREAM, stream_id, after_version)
        return [self._recorded(r) for r in rows]

    async def expect_version(
        self, stream_id: str, expected_version: int, *, connection: asyncpg.Connection
    ) -> None:
        """Inside a write's transaction: ``ConcurrencyError`` if ``stream_id`` moved on.

        For a decision that reads a stream it does not append to (login reads the
        two-factor stream) and must not stand if that stream changed meanwhile.
        """
        if await self.stream_version(stream_id, connection=connection) != expected_version:
            raise ConcurrencyError(stream_id, expected_version)

    async def stream_version(
        self, stream_id: str, *, connection: asyncpg.Connection | None = None
    ) -> int:
        async with self._connection(connection) as conn:
            version = await conn.fetchval(
                "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
                stream_id,
            )
        return int(version)

    async def read_all(
        self,
        after: Checkpoint = START,
        limit: int = 500,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> list[RecordedEvent]:
        """Committed events after ``after`` in commit-safe order, at most ``limit``."""
        args = (str(after.transaction_id), after.position, limit)
        async with self._connection(connection) as conn:
            rows = await conn.fetch(_READ_ALL, *args)
        return [self._recorded(r) for r in rows]

    async def load_snapshot(
        self,
        stream_id: str,
        snapshot_type: str,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> Snapshot | None:
        async with self._connection(connection) as conn:
            row = await conn.fetchrow(
                "SELECT stream_version, schema_version, state, key_id, mac FROM snapshots"
                " WHERE stream_id = $1 AND snapshot_type = $2",
                stream_id,
                snapshot_type,
            )
        if row is None:
            return None
        return Snapshot(*row)

    async def save_snapshot(
        self,
        stream_id: str,
        snapshot_type: str,
        snapshot: Snapshot,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> None:
        """Keep the newest snapshot of a stream; an older one never replaces a newer,
        except a row claiming a version the stream has not reached (only a forger
        writes one, and it must not stay in the way of every later snapshot).

        Pass the appending transaction's ``connection`` so that a rolled-back append
        takes its snapshot with it.
        """
        async with self._connection(connection) as conn:
            await conn.execute(
                _SAVE_SNAPSHOT,
                stream_id,
                snapshot_type,
                snapshot.stream_version,
                snapshot.schema_version,
                snapshot.state,
                snapshot.key_id,
                snapshot.mac,
            )

    def _connection(
        self, connection: asyncpg.Connection | None
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        if connection is not None:
            return nullcontext(connection)
        return self.pool.acquire()  # type: ignore[no-any-return]

    def _recorded(self, row: asyncpg.Record) -> RecordedEvent:
        # By position, in _SELECT_EVENTS order: this runs once per row read.
        position, txid, stream_id, version, event_id, kind, schema, data, meta, at = row
        return RecordedEvent(
            position,
            int(txid),
            stream_id,
            version,
            event_id,
            self.registry.decode(kind, schema, data),
            EventMetadata.from_dict(meta),
            at,
        )
