"""Snapshots nobody can forge: an HMAC-SHA256 over everything a snapshot claims.

A snapshot says "stream S, at version V, folded into type T of schema N, is this
state". The MAC covers all five, each length-prefixed so that no byte can move from
one field to the next, and the state as the exact bytes stored (never re-serialised by
PostgreSQL). The key comes from configuration (``TWOFA_SNAPSHOT_KEYS``), never from the
database, and its id is stored beside the MAC, so keys rotate: new snapshots take the
active key, and any key still in the ring checks the older ones.

Binding the stream and the version is what makes a copied snapshot useless: one moved
to another stream fails, and an old one put back is folded forward from its version.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping

__all__ = ["SnapshotKeys", "SnapshotRefused", "snapshot_message"]

_TAG = b"twofa.snapshot.v1"


class SnapshotRefused(Exception):
    """A snapshot's MAC does not hold; ``reason`` is ``missing``, ``unknown_key`` or
    ``mismatch`` (a label for the alarm counter, never a key or a state)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def snapshot_message(
    stream_id: str, stream_version: int, snapshot_type: str, schema_version: int, state: bytes
) -> bytes:
    """The bytes a snapshot's MAC is computed over: a tag, then each field length-prefixed."""
    return b"".join(
        (
            _field(_TAG),
            _field(stream_id.encode()),
            _field(struct.pack(">q", stream_version)),
            _field(snapshot_type.encode()),
            _field(struct.pack(">q", schema_version)),
            _field(state),
        )
    )


class SnapshotKeys:
    """HMAC-SHA256 keys by id; ``active`` signs new snapshots, every key checks."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active snapshot key {active!r} is not in the ring")
        for kid, key in keys.items():
            if not kid or len(key) < 32:
                raise ValueError(f"snapshot key {kid!r} must have an id and 32 bytes or more")
        self._keys = dict(keys)
        self.active = active

    def sign(self, message: bytes) -> tuple[str, bytes]:
        """The active key's id and its MAC of ``message`` (from ``snapshot_message``)."""
        return self.active, hmac.digest(self._keys[self.active], message, hashlib.sha256)

    def check(self, key_id: str, mac: bytes, message: bytes) -> None:
        """``SnapshotRefused`` unless ``mac`` is the MAC of ``message`` under ``key_id``."""
        if not key_id or not mac:
            raise SnapshotRefused("missing")
        key = self._keys.get(key_id)
        if key is None:
            raise SnapshotRefused("unknown_key")
        if not hmac.compare_digest(mac, hmac.digest(key, message, hashlib.sha256)):
            raise SnapshotRefused("mismatch")
