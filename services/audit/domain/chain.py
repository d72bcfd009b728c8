"""The audit log's hash chain: one chain per account, SHA-256 over the bytes it stores.

Each entry is stored as its canonical bytes, ``content``: RFC 8785 JSON of everything
that describes the event (not the Kafka partition and offset, which are transport
details: a rebuild from the event store has none, yet gives the same bytes), computed
once when the entry is recorded and kept as they are. ``hash = SHA-256(prev_hash ||
content)``; the first entry of a chain links to ``GENESIS``, 32 zero bytes. The columns
beside the content (for filtering and display) must say what the content says: verify
checks both. Entries recorded before the content was stored (migration 0007) keep the
old rule, a hash over orjson sorted-key JSON of their columns (``legacy_content``).
Pure: the SQL adapter stores and reads entries, these rules say what they must be.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.security.canonical import NotCanonicalError, canonical

__all__ = [
    "COLUMNS",
    "GENESIS",
    "ChainWalk",
    "Entry",
    "NotCanonicalError",
    "Stored",
    "extend",
    "legacy_content",
    "link",
]

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

    def document(self) -> dict[str, Any]:
        """The entry as a JSON object (ids and times as text)."""
        return {
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
        }

    def content(self) -> bytes:
        """The bytes the entry is stored and hashed as; ``NotCanonicalError`` for data
        RFC 8785 cannot write (the record is refused, never stored altered)."""
        return canonical(self.document())

    @classmethod
    def read(cls, content: bytes) -> Entry:
        """The entry that stored ``content`` says; ``ValueError`` if it says none."""
        try:
            doc = orjson.loads(content)
            return cls(**{name: _READ.get(name, _same)(doc[name]) for name in _FIELDS})
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not the content of an audit entry: {type(exc).__name__}") from exc


def _uuid_or_none(text: str | None) -> uuid.UUID | None:
    return uuid.UUID(text) if text is not None else None


def _same(value: Any) -> Any:
    return value


_FIELDS = tuple(f.name for f in fields(Entry))
# What an entry says besides its data, each also kept in a column of its own.
COLUMNS = tuple(name for name in _FIELDS if name != "data")
# How the content writes what is not plain JSON (``Entry.document``), read back.
_READ: dict[str, Callable[[Any], Any]] = {
    "event_id": uuid.UUID,
    "correlation_id": _uuid_or_none,
    "causation_id": _uuid_or_none,
    "occurred_at": datetime.fromisoformat,
}


def legacy_content(entry: Entry) -> bytes:
    """What entries recorded before migration 0007 were hashed over, rebuilt from columns."""
    return orjson.dumps(entry.document(), option=orjson.OPT_SORT_KEYS)


def link(prev_hash: bytes, content: bytes) -> bytes:
    """The hash of an entry stored as ``content`` after an entry hashed ``prev_hash``."""
    return hashlib.sha256(prev_hash + content).digest()


def extend(head: tuple[int, bytes] | None) -> tuple[int, bytes]:
    """The next entry's ``chain_seq`` and ``prev_hash``, after ``head`` (seq, hash) or none."""
    if head is None:
        return 1, GENESIS
    seq, head_hash = head
    return seq + 1, head_hash


@dataclass(frozen=True, slots=True)
class Stored:
    """An entry as the log holds it: its id, what its columns say, the two hashes stored
    with it, and its content (None for an entry recorded before migration 0007, whose
    columns, data included, are all there is of it)."""

    id: int
    entry: Entry
    prev_hash: bytes
    hash: bytes
    content: bytes | None = None


@dataclass
class ChainWalk:
    """Verifies entries fed in (chain, chain_seq) order: each chain's sequence has no gap,
    each entry links to the one before, each hash matches its content, and each column
    says what the content says."""

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
    content = legacy_content(stored.entry) if stored.content is None else stored.content
    if link(prev, content) != stored.hash:
        return "the content does not match its hash"
    if stored.content is not None:
        return _disagreement(stored.entry, stored.content)
    return None


def _disagreement(columns: Entry, content: bytes) -> str | None:
    try:
        said = Entry.read(content)
    except ValueError:
        return "the content is not an audit entry"
    for name in COLUMNS:
        if getattr(columns, name) != getattr(said, name):
            return f"column {name} does not say what the content says"
    return None
