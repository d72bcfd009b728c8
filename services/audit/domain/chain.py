"""The audit log's hash chain: one chain per account, SHA-256 over canonical content.

``hash = SHA-256(prev_hash || canonical(entry))`` where ``canonical`` is sorted-key JSON
of everything that describes the event (not the Kafka partition and offset, which are
transport details: a rebuild from the event store has none, yet gives the same hashes).
The first entry of a chain links to ``GENESIS``, 32 zero bytes. Pure: the SQL adapter
stores and reads entries, these rules say what they must be.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["GENESIS", "ChainWalk", "Entry", "Stored", "extend", "link"]

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


def extend(head: tuple[int, bytes] | None) -> tuple[int, bytes]:
    """The next entry's ``chain_seq`` and ``prev_hash``, after ``head`` (seq, hash) or none."""
    if head is None:
        return 1, GENESIS
    seq, head_hash = head
    return seq + 1, head_hash


@dataclass(frozen=True, slots=True)
class Stored:
    """An entry as the log holds it: its id, content and the two hashes stored with it."""

    id: int
    entry: Entry
    prev_hash: bytes
    hash: bytes


@dataclass
class ChainWalk:
    """Verifies entries fed in (chain, chain_seq) order: each chain's sequence has no gap,
    each entry links to the one before, and each hash matches its content."""

    entries: int = 0
    chains: int = 0
    broken: dict[str, Any] | None = None
    _heads: list[tuple[str, bytes]] = field(default_factory=list)
    _chain: str | None = None
    _prev: bytes = GENESIS
    _expected_seq: int = 1

    def add(self, stored: Stored) -> None:
        entry = stored.entry
        if entry.chain != self._chain:
            self._close_chain()
            self._chain, self._prev, self._expected_seq = entry.chain, GENESIS, 1
            self.chains += 1
        self.entries += 1
        reason = _fault(stored, self._prev, self._expected_seq)
        if reason and (self.broken is None or stored.id < self.broken["id"]):
            self.broken = {
                "id": stored.id,
                "event_id": str(entry.event_id),
                "account_id": entry.chain,
                "chain_seq": entry.chain_seq,
                "reason": reason,
            }
        self._prev, self._expected_seq = stored.hash, entry.chain_seq + 1

    def result(self) -> dict[str, Any]:
        """OK with counts and a digest of every chain's head, or the first broken entry."""
        self._close_chain()
        root = hashlib.sha256(
            b"".join(f"{name}:{head.hex()}\n".encode() for name, head in sorted(self._heads))
        ).hexdigest()
        result: dict[str, Any] = {
            "ok": self.broken is None,
            "entries": self.entries,
            "chains": self.chains,
            "root": root,
        }
        if self.broken is not None:
            result["first_broken"] = self.broken
        return result

    def _close_chain(self) -> None:
        if self._chain is not None:
            self._heads.append((self._chain, self._prev))
            self._chain = None


def _fault(stored: Stored, prev: bytes, expected_seq: int) -> str | None:
    seq = stored.entry.chain_seq
    if seq != expected_seq:
        return f"chain_seq {seq} where {expected_seq} was due: an entry is missing"
    if stored.prev_hash != prev:
        return "prev_hash does not match the previous entry's hash"
    if link(prev, stored.entry) != stored.hash:
        return "the content does not match its hash"
    return None
