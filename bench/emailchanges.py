"""Email changes: the events the event store benchmarks write, and a fold that reads them.

The store writes ``EmailChanged`` events; the raw asyncpg baselines write the same JSON
(``raw_data``, ``raw_metadata``), as orjson text cast to jsonb. Used by figure 3
(``bench/parts/appends.py``), figure 7 (``bench/parts/peer.py``) and
``python -m bench.eventstore``.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.domain.base import DomainEvent
from shared.domain.events import EmailChanged
from shared.eventstore.envelope import NewEvent
from shared.eventstore.repository import Repository
from shared.security.snapshot_mac import SnapshotKeys

EVENT_TYPE = EmailChanged.type
SEED_BATCH = 10  # events per save while building a stream with ``seed_stream``


def snapshot_keys() -> SnapshotKeys:
    """A throwaway snapshot key ring for the bench's repositories."""
    return SnapshotKeys({"bench": secrets.token_bytes(32)}, "bench")


def new_stream_id() -> str:
    """A stream id no other writer uses."""
    return f"account-{uuid.uuid4()}"


def email_changed(n: int) -> EmailChanged:
    """The ``n``-th change of a stream: from user{n} to user{n + 1}."""
    return EmailChanged(email=f"user{n + 1}@example.com", previous_email=f"user{n}@example.com")


def new_events(first: int, count: int) -> list[NewEvent]:
    """``count`` changes from the ``first``-th on, ready to append."""
    return [NewEvent(email_changed(first + i)) for i in range(count)]


def raw_data(n: int) -> str:
    """The same JSON the store writes for ``email_changed(n)``."""
    return orjson.dumps(
        {"email": f"user{n + 1}@example.com", "previous_email": f"user{n}@example.com"}
    ).decode()


def raw_metadata() -> str:
    """The same JSON shape as ``EventMetadata``: a fresh correlation id and timestamp."""
    meta = {
        "correlation_id": uuid.uuid4(),
        "causation_id": None,
        "actor": None,
        "occurred_at": datetime.now(UTC),
    }
    return orjson.dumps(meta).decode()


class EmailChanges:
    """A small fold: how many times the email changed."""

    snapshot_type = "bench.email_changes"
    snapshot_schema_version = 1

    def initial(self) -> int:
        return 0

    def evolve(self, state: int, event: DomainEvent) -> int:
        assert isinstance(event, EmailChanged)
        return state + 1

    def to_snapshot(self, state: int) -> dict[str, Any]:
        return {"count": state}

    def from_snapshot(self, data: dict[str, Any]) -> int:
        return int(data["count"])


async def seed_stream(repository: Repository[int], length: int) -> str:
    """A stream of ``length`` events saved ``SEED_BATCH`` at a time, snapshots included."""
    stream_id = new_stream_id()
    loaded = await repository.load(stream_id)
    while loaded.version < length:
        events = new_events(loaded.version, min(SEED_BATCH, length - loaded.version))
        loaded = await repository.save(stream_id, loaded, events)
    return stream_id
