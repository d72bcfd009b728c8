"""The audit log's hash chain: one chain per account, SHA-256 over canonical content.

``hash = SHA-256(prev_hash || canonical(entry))`` where ``canonical`` is sorted-key JSON
of everything that describes the event (not the Kafka partition and offset, which are
transport details: a rebuild from the event store has none, yet gives the same hashes).
The first entry of a chain links to 32 zero bytes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.integration import IntegrationEvent

__all__ = ["GENESIS", "Entry", "entry_of", "link"]

GENESIS = bytes(32)


@dataclass(frozen=True, slots=True)
class Entry:
    """What an audit entry says about its event: the hashed content."""

    event_id: uuid.UUID
    chain: str
    chain_seq: int
    event_type: str
    source: str
    actor: str | None
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    occurred_at: datetime
    store_position: int
    dataschema: str
    data: dict[str, Any]

    def canonical(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": str(self.event_id),
                "chain": self.chain,
                "chain_seq": self.chain_seq,
                "event_type": self.event_type,
                "source": self.source,
                "actor": self.actor,
                "correlation_id": str(self.correlation_id) if self.correlation_id else None,
                "causation_id": str(self.causation_id) if self.causation_id else None,
                "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
                "store_position": self.store_position,
                "dataschema": self.dataschema,
                "data": self.data,
            },
            option=orjson.OPT_SORT_KEYS,
        )


def link(prev_hash: bytes, entry: Entry) -> bytes:
    return hashlib.sha256(prev_hash + entry.canonical()).digest()


def entry_of(event: IntegrationEvent, chain_seq: int) -> Entry:
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
