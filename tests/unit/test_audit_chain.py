"""The audit chain's rules, pure: next position, links, and the verification walk."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime

from services.audit.domain.chain import GENESIS, ChainWalk, Entry, Stored, extend, link

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def entry(chain: str, seq: int, data: dict[str, object] | None = None) -> Entry:
    return Entry(
        event_id=uuid.uuid4(),
        chain=chain,
        chain_seq=seq,
        event_type="login.succeeded",
        source="twofa/auth",
        actor=f"account:{chain}",
        correlation_id=None,
        causation_id=None,
        occurred_at=AT,
        store_position=seq,
        dataschema="urn:twofa:schema:login.succeeded:1",
        data=data or {"n": seq},
    )


def chain_of(name: str, length: int, first_id: int = 1) -> list[Stored]:
    stored, head = [], None
    for i in range(length):
        seq, prev = extend(head)
        item = entry(name, seq)
        digest = link(prev, item)
        stored.append(Stored(first_id + i, item, prev, digest))
        head = (seq, digest)
    return stored


def walk(entries: list[Stored]) -> dict[str, object]:
    checker = ChainWalk()
    for stored in entries:
        checker.add(stored)
    return checker.result()


def test_a_chain_starts_at_one_after_genesis_and_extends_its_head() -> None:
    assert extend(None) == (1, GENESIS)
    assert extend((4, b"h" * 32)) == (5, b"h" * 32)


def test_intact_chains_verify_with_counts() -> None:
    result = walk(chain_of("a", 3) + chain_of("b", 2, first_id=10))
    assert (result["ok"], result["entries"], result["chains"]) == (True, 5, 2)
    assert "first_broken" not in result


def test_edited_content_is_found() -> None:
    entries = chain_of("a", 3)
    edited = dataclasses.replace(entries[1].entry, data={"n": 99})
    entries[1] = dataclasses.replace(entries[1], entry=edited)
    broken = walk(entries)["first_broken"]
    assert broken == {
        "id": 2,
        "event_id": str(edited.event_id),
        "account_id": "a",
        "chain_seq": 2,
        "reason": "the content does not match its hash",
    }


def test_a_missing_entry_is_found() -> None:
    entries = chain_of("a", 3)
    del entries[1]
    broken = walk(entries)["first_broken"]
    assert isinstance(broken, dict)
    assert broken["reason"] == "chain_seq 3 where 2 was due: an entry is missing"


def test_a_relinked_entry_is_found() -> None:
    entries = chain_of("a", 2)
    entries[1] = dataclasses.replace(entries[1], prev_hash=GENESIS)
    broken = walk(entries)["first_broken"]
    assert isinstance(broken, dict)
    assert broken["reason"] == "prev_hash does not match the previous entry's hash"


def test_the_root_is_the_digest_of_every_chains_head() -> None:
    a, b = chain_of("a", 2), chain_of("b", 1, first_id=5)
    heads = f"a:{a[-1].hash.hex()}\nb:{b[-1].hash.hex()}\n".encode()
    assert walk(a + b)["root"] == hashlib.sha256(heads).hexdigest()
