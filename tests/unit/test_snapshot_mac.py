"""The snapshot MAC: every field it covers, its encoding, and keys that rotate."""

from __future__ import annotations

import secrets

import pytest

from shared.security.snapshot_mac import SnapshotKeys, SnapshotRefused, snapshot_message

STATE = b'{"enabled":true,"time_step":57000000}'
FIELDS = ("twofactor-5c1d", 200, "twofactor", 2, STATE)


def ring(*kids: str) -> dict[str, bytes]:
    return {kid: secrets.token_bytes(32) for kid in kids}


def refusal(keys: SnapshotKeys, key_id: str, mac: bytes, message: bytes) -> str:
    with pytest.raises(SnapshotRefused) as refused:
        keys.check(key_id, mac, message)
    return refused.value.reason


def test_a_signed_snapshot_checks() -> None:
    keys = SnapshotKeys(ring("s1"), "s1")
    key_id, mac = keys.sign(snapshot_message(*FIELDS))
    assert key_id == "s1" and len(mac) == 32
    keys.check(key_id, mac, snapshot_message(*FIELDS))


@pytest.mark.parametrize(
    "changed",
    [
        ("twofactor-5c1e", 200, "twofactor", 2, STATE),  # another stream
        ("twofactor-5c1d", 201, "twofactor", 2, STATE),  # another version
        ("twofactor-5c1d", 200, "account", 2, STATE),  # another snapshot type
        ("twofactor-5c1d", 200, "twofactor", 3, STATE),  # another schema version
        ("twofactor-5c1d", 200, "twofactor", 2, STATE.replace(b"true", b"false")),
        ("twofactor-5c1d", 200, "twofactor", 2, STATE + b" "),  # one byte more
        ("twofactor-5c1d", 200, "twofactor", 2, b'{"time_step":57000000,"enabled":true}'),
    ],
    ids=["stream", "version", "type", "schema", "state", "trailing-space", "key-order"],
)
def test_changing_any_field_breaks_the_mac(changed: tuple[str, int, str, int, bytes]) -> None:
    keys = SnapshotKeys(ring("s1"), "s1")
    key_id, mac = keys.sign(snapshot_message(*FIELDS))
    assert refusal(keys, key_id, mac, snapshot_message(*changed)) == "mismatch"


def test_bytes_cannot_move_from_one_field_to_the_next() -> None:
    assert snapshot_message("ab", 1, "c", 1, b"") != snapshot_message("a", 1, "bc", 1, b"")
    assert snapshot_message("a", 1, "b", 1, b"c") != snapshot_message("a", 1, "bc", 1, b"")


@pytest.mark.parametrize(
    ("key_id", "mac", "reason"),
    [
        ("", b"", "missing"),
        ("s1", b"", "missing"),
        ("", b"\x00" * 32, "missing"),
        ("s1", b"\x00" * 32, "mismatch"),  # garbage
        ("s1", b"not a mac at all", "mismatch"),
        ("s9", b"\x00" * 32, "unknown_key"),
    ],
)
def test_a_missing_garbage_or_unknown_mac_is_refused(key_id: str, mac: bytes, reason: str) -> None:
    keys = SnapshotKeys(ring("s1"), "s1")
    assert refusal(keys, key_id, mac, snapshot_message(*FIELDS)) == reason


def test_a_mac_by_another_key_under_the_same_id_is_refused() -> None:
    mine, theirs = SnapshotKeys(ring("s1"), "s1"), SnapshotKeys(ring("s1"), "s1")
    key_id, mac = theirs.sign(snapshot_message(*FIELDS))
    assert refusal(mine, key_id, mac, snapshot_message(*FIELDS)) == "mismatch"


def test_keys_rotate_an_older_key_checks_until_it_is_removed() -> None:
    old, new = ring("2026-01"), ring("2026-06")
    before = SnapshotKeys(old, "2026-01")
    key_id, mac = before.sign(snapshot_message(*FIELDS))
    during = SnapshotKeys({**old, **new}, "2026-06")
    during.check(key_id, mac, snapshot_message(*FIELDS))  # still in the ring: accepted
    assert during.sign(snapshot_message(*FIELDS))[0] == "2026-06"  # new ones: the active key
    after = SnapshotKeys(new, "2026-06")
    assert refusal(after, key_id, mac, snapshot_message(*FIELDS)) == "unknown_key"


@pytest.mark.parametrize(
    ("keys", "active"),
    [({"s1": secrets.token_bytes(32)}, "s2"), ({"s1": secrets.token_bytes(16)}, "s1")],
    ids=["active-not-in-ring", "short-key"],
)
def test_a_ring_without_its_active_key_or_with_a_short_key_is_refused(
    keys: dict[str, bytes], active: str
) -> None:
    with pytest.raises(ValueError, match="snapshot key"):
        SnapshotKeys(keys, active)
