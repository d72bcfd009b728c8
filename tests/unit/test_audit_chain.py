"""The audit chain's rules, pure: next position, links, the bytes an entry is stored as,
and the verification walk."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.domain.chain import (
    GENESIS,
    ChainWalk,
    Entry,
    Stored,
    extend,
    legacy_content,
    link,
)
from shared.security.canonical import NotCanonicalError, canonical

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


def as_columns(item: Entry) -> Entry:
    """What the log's columns hold of an entry stored as content: all but its data."""
    return dataclasses.replace(item, data={})


def chain_of(name: str, length: int, first_id: int = 1) -> list[Stored]:
    stored, head = [], None
    for i in range(length):
        seq, prev = extend(head)
        item = entry(name, seq)
        content = item.content()
        digest = link(prev, content)
        stored.append(Stored(first_id + i, as_columns(item), prev, digest, content))
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


def test_the_hash_is_over_the_previous_hash_and_the_stored_bytes() -> None:
    first, second = chain_of("a", 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert second.content is not None
    assert second.hash == hashlib.sha256(first.hash + second.content).digest()


def test_edited_content_is_found() -> None:
    entries = chain_of("a", 3)
    stored = entries[1]
    assert stored.content is not None
    edited = stored.content.replace(b'"n":2', b'"n":9')
    assert edited != stored.content
    entries[1] = dataclasses.replace(stored, content=edited)
    broken = walk(entries)["first_broken"]
    assert broken == {
        "id": 2,
        "event_id": str(stored.entry.event_id),
        "account_id": "a",
        "chain_seq": 2,
        "reason": "the content does not match its hash",
    }


# Each column an entry keeps beside its content, edited: verify names it.
EDITED_COLUMNS: list[tuple[str, Any]] = [
    ("event_id", uuid.uuid4()),
    ("event_type", "twofa.disabled"),
    ("source", "/elsewhere"),
    ("actor", "operator:mallory"),
    ("actor", None),
    ("correlation_id", uuid.uuid4()),
    ("causation_id", uuid.uuid4()),
    ("occurred_at", AT + timedelta(microseconds=1)),
    ("store_position", 10**6),
    ("dataschema", "urn:twofa:event:twofa.disabled:v1"),
]


@pytest.mark.parametrize(("column", "value"), EDITED_COLUMNS)
def test_a_column_that_disagrees_with_the_content_is_found(column: str, value: Any) -> None:
    entries = chain_of("a", 3)
    stored = entries[1]
    entries[1] = dataclasses.replace(
        stored, entry=dataclasses.replace(stored.entry, **{column: value})
    )
    broken = walk(entries)["first_broken"]
    assert isinstance(broken, dict) and broken["id"] == 2
    assert broken["reason"] == f"column {column} does not say what the content says"


def test_the_same_instant_in_another_zone_is_no_disagreement() -> None:
    entries = chain_of("a", 1)
    elsewhere = AT.astimezone(timezone(timedelta(hours=5)))
    entries[0] = dataclasses.replace(
        entries[0], entry=dataclasses.replace(entries[0].entry, occurred_at=elsewhere)
    )
    assert walk(entries)["ok"] is True


def test_an_entry_moved_to_another_chain_is_found() -> None:
    # The first of its chain, so its sequence and link still look right in the other.
    entries = chain_of("a", 1)
    moved = dataclasses.replace(entries[0].entry, chain="b")
    broken = walk([dataclasses.replace(entries[0], entry=moved)])["first_broken"]
    assert isinstance(broken, dict)
    assert broken["reason"] == "column chain does not say what the content says"


def test_content_that_is_no_entry_is_found_even_with_its_hash_right() -> None:
    entries = chain_of("a", 1)
    for content in (b"[]", b'{"event_id": "x"}', b"not json"):
        forged = dataclasses.replace(entries[0], content=content, hash=link(GENESIS, content))
        broken = walk([forged])["first_broken"]
        assert isinstance(broken, dict)
        assert broken["reason"] == "the content is not an audit entry", content


def test_an_entry_recorded_before_content_was_stored_verifies_the_old_way() -> None:
    # Migration 0007: such a row has no content, its columns (data too) are the entry.
    old = entry("a", 1, {"reason": "password"})
    legacy = Stored(1, old, GENESIS, link(GENESIS, legacy_content(old)), None)
    item = entry("a", 2)
    content = item.content()
    after = Stored(2, as_columns(item), legacy.hash, link(legacy.hash, content), content)
    assert walk([legacy, after])["ok"] is True
    assert legacy_content(old) == orjson.dumps(old.document(), option=orjson.OPT_SORT_KEYS)
    edited = dataclasses.replace(legacy, entry=dataclasses.replace(old, data={"reason": "x"}))
    broken = walk([edited, after])["first_broken"]
    assert isinstance(broken, dict)
    assert broken["reason"] == "the content does not match its hash"


def test_content_reads_back_as_the_entry_it_was_made_from() -> None:
    item = dataclasses.replace(
        entry("a", 3, {"x": 1e16, "y": -0.0, "z": "\u00e9\U0001f600"}),
        correlation_id=uuid.uuid4(),
        actor=None,
    )
    read = Entry.read(item.content())
    assert read == dataclasses.replace(item, data={"x": 10**16, "y": 0, "z": "\u00e9\U0001f600"})
    assert read.content() == item.content()


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


# -- the canonical bytes (RFC 8785) ------------------------------------------------------

# Each value, and the bytes RFC 8785 writes for it.
CANONICAL: list[tuple[Any, bytes]] = [
    (1e16, b"10000000000000000"),
    (10**16, b"10000000000000000"),  # the same double, read back as an integer
    (1.5e-7, b"1.5e-7"),
    (2**53, b"9007199254740992"),  # a double holds it exactly
    (2**53 - 1, b"9007199254740991"),
    (-(2**53), b"-9007199254740992"),
    (1234567890123456800, b"1234567890123456800"),  # how RFC 8785 writes 1.2345678901234568e18
    (1.0, b"1"),
    (-0.0, b"0"),
    (1e21, b"1e+21"),
    (5e-324, b"5e-324"),
    (True, b"true"),
    (None, b"null"),
    ("\u00e9", '"\u00e9"'.encode()),
    ("\U0001f600", '"\U0001f600"'.encode()),  # from the pair \ud83d\ude00
    ("\u2028", '"\u2028"'.encode()),
    ('"', b'"\\""'),
    ("\x00\x1f\x7f", b'"\\u0000\\u001f\x7f"'),
    ({"b": 1, "a": [2.5, {"d": None, "c": False}]}, b'{"a":[2.5,{"c":false,"d":null}],"b":1}'),
    # Sorted by UTF-16 code units: U+1F600 (D83D DE00) before U+E000.
    ({"\ue000": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ue000":1}'.encode()),
]


@pytest.mark.parametrize(("value", "expected"), CANONICAL)
def test_canonical_bytes_are_rfc_8785(value: Any, expected: bytes) -> None:
    assert canonical(value) == expected
    assert canonical(orjson.loads(expected)) == expected


# Each value RFC 8785 cannot write, and what the refusal says (never the value itself).
REFUSED: list[tuple[Any, str]] = [
    (2**53 + 1, "an integer beyond 2^53 has no exact RFC 8785 form"),
    (-(2**53) - 1, "an integer beyond 2^53 has no exact RFC 8785 form"),
    (2**63, "an integer beyond 2^53 has no exact RFC 8785 form"),  # written 9223372036854776000
    (10**400, "an integer beyond 2^53 has no exact RFC 8785 form"),
    (float("nan"), "a number is NaN or infinite"),
    (float("inf"), "a number is NaN or infinite"),
    (float("-inf"), "a number is NaN or infinite"),
    ("\ud800", "a string is not valid Unicode text"),
    ({"k": ["\udfff"]}, "a string is not valid Unicode text"),
    ({"\ud800\u00e9": 1}, "an object key is not valid Unicode text"),
    ({1: "one"}, "an object key is not a string"),
    ((1, 2), "a tuple is not a JSON value"),
    (b"bytes", "a bytes is not a JSON value"),
]


@pytest.mark.parametrize(("value", "reason"), REFUSED)
def test_what_rfc_8785_cannot_write_is_refused(value: Any, reason: str) -> None:
    with pytest.raises(NotCanonicalError) as refused:
        canonical({"data": value})
    assert str(refused.value) == reason


def test_an_entry_whose_data_cannot_be_canonical_is_refused() -> None:
    with pytest.raises(NotCanonicalError):
        entry("a", 1, {"n": 2**53 + 1}).content()


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_canonical_bytes_are_rfc8785s_and_read_back_to_themselves(value: Any) -> None:
    expected = rfc8785.dumps(value)
    assert canonical(value) == expected
    assert canonical(orjson.loads(expected)) == expected
