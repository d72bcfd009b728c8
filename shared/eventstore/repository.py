"""Loading and saving event-sourced aggregates: a fold over a stream, with snapshots.

An aggregate is described by a ``Fold``: its initial state, ``evolve(state, event)``,
and how its state becomes a snapshot and back. ``Repository.load`` starts from the
newest snapshot and folds only the events after it, so a long stream costs about what a
short one does; ``Repository.save`` appends with the loaded version as the expected one.

A snapshot is a cache that anyone with a database login could write, so it is believed
only when its MAC holds (``shared.security.snapshot_mac``, a key from configuration).
One that does not, or whose state does not decode, is ignored: the stream is folded
from its first event, a warning names the stream and the reason, and
``twofa_snapshot_rejected_total`` counts it as an alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
import orjson
from prometheus_client import Counter

from shared.domain.base import DomainEvent
from shared.eventstore.envelope import NewEvent
from shared.eventstore.store import EventStore, Snapshot
from shared.security.snapshot_mac import SnapshotKeys, SnapshotRefused, snapshot_message

__all__ = ["Fold", "Loaded", "Repository"]

log = logging.getLogger(__name__)

REJECTED = Counter(
    "twofa_snapshot_rejected",
    "Snapshots ignored because their MAC failed or their state did not decode (an alarm)",
    ["type", "reason"],
)

S = TypeVar("S")


class Fold(Protocol[S]):
    """How an aggregate's state is built from its events."""

    snapshot_type: str
    snapshot_schema_version: int

    def initial(self) -> S: ...

    def evolve(self, state: S, event: DomainEvent) -> S: ...

    def to_snapshot(self, state: S) -> dict[str, Any]: ...

    def from_snapshot(self, data: dict[str, Any]) -> S: ...


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """An aggregate's state and the stream version it reflects (the next expected one)."""

    state: S
    version: int


class Repository(Generic[S]):
    """Loads and saves one kind of aggregate through the event store."""

    def __init__(
        self, store: EventStore, fold: Fold[S], keys: SnapshotKeys, *, snapshot_every: int = 100
    ) -> None:
        self.store = store
        self.fold = fold
        self.keys = keys
        self.snapshot_every = snapshot_every

    async def load(
        self, stream_id: str, *, connection: asyncpg.Connection | None = None
    ) -> Loaded[S]:
        """The current state: newest snapshot whose MAC holds, then every later event."""
        state, version = self.fold.initial(), 0
        snapshot = await self.store.load_snapshot(
            stream_id, self.fold.snapshot_type, connection=connection
        )
        if snapshot is not None and (start := self._believe(stream_id, snapshot)) is not None:
            state, version = start, snapshot.stream_version
        for recorded in await self.store.read_stream(stream_id, version, connection=connection):
            state = self.fold.evolve(state, recorded.event)
            version = recorded.stream_version
        return Loaded(state, version)

    async def save(
        self,
        stream_id: str,
        loaded: Loaded[S],
        events: Sequence[NewEvent],
        *,
        connection: asyncpg.Connection | None = None,
    ) -> Loaded[S]:
        """Append ``events`` decided on ``loaded``; ``ConcurrencyError`` if it went stale."""
        version = await self.store.append(stream_id, events, loaded.version, connection=connection)
        state = loaded.state
        for new in events:
            state = self.fold.evolve(state, new.event)
        if events and version // self.snapshot_every > loaded.version // self.snapshot_every:
            await self._snapshot(stream_id, state, version, connection)
        return Loaded(state, version)

    async def _snapshot(
        self, stream_id: str, state: S, version: int, connection: asyncpg.Connection | None
    ) -> None:
        # A snapshot is a cache: failing to write one must not fail the command. Inside
        # the caller's transaction it goes in a savepoint, so it rolls back with the append.
        schema = self.fold.snapshot_schema_version
        data = orjson.dumps(self.fold.to_snapshot(state))
        key_id, mac = self.keys.sign(self._message(stream_id, version, schema, data))
        snapshot = Snapshot(version, schema, data, key_id, mac)
        try:
            if connection is not None and connection.is_in_transaction():
                async with connection.transaction():
                    await self.store.save_snapshot(
                        stream_id, self.fold.snapshot_type, snapshot, connection=connection
                    )
            else:
                await self.store.save_snapshot(
                    stream_id, self.fold.snapshot_type, snapshot, connection=connection
                )
        except (asyncpg.PostgresError, OSError):
            log.warning("snapshot of %s at version %d not saved", stream_id, version, exc_info=True)

    def _believe(self, stream_id: str, snapshot: Snapshot) -> S | None:
        """The snapshot's state if its MAC holds, it is of this fold's schema and it
        decodes; otherwise None (and an alarm, unless it is only of an older schema)."""
        message = self._message(
            stream_id, snapshot.stream_version, snapshot.schema_version, snapshot.state
        )
        try:
            self.keys.check(snapshot.key_id, snapshot.mac, message)
        except SnapshotRefused as refused:
            self._reject(stream_id, refused.reason)
            return None
        if snapshot.schema_version != self.fold.snapshot_schema_version:
            return None  # an older shape, not an attack: fold from the first event
        try:
            return self.fold.from_snapshot(orjson.loads(snapshot.state))
        except (ValueError, TypeError, KeyError, AttributeError):
            self._reject(stream_id, "undecodable")
            return None

    def _message(self, stream_id: str, version: int, schema: int, state: bytes) -> bytes:
        return snapshot_message(stream_id, version, self.fold.snapshot_type, schema, state)

    def _reject(self, stream_id: str, reason: str) -> None:
        # The stream id and the reason only: never the state, the MAC or a key.
        log.warning("snapshot of %s ignored (%s): folding from the first event", stream_id, reason)
        REJECTED.labels(self.fold.snapshot_type, reason).inc()
