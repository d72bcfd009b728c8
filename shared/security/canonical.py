"""Canonical JSON (RFC 8785, JCS): the one byte form of a JSON value, for signing or
hashing it (the relay's signatures, the audit log's entries).

The bytes are those of ``rfc8785.dumps`` (a test holds the two equal): keys sorted by
UTF-16 code units, no whitespace, strings as written by ECMAScript, every number as the
shortest text of its IEEE double (``1e16`` -> ``10000000000000000``, ``-0.0`` -> ``0``,
``1.0`` -> ``1``). Two differences of reach, not of output:

- an integer beyond 2^53 - 1, which ``rfc8785`` refuses, is taken when RFC 8785 writes
  the double it denotes with the same digits (``10000000000000000``, ``9007199254740992``),
  so that canonical bytes read back (where 1e16 comes back as that integer) and written
  again are the same bytes; any other is refused, never rounded;
- it is fast: orjson writes what JCS writes the same way (strings, integers, literals),
  ``rfc8785`` only the floats, so it costs a walk of the value rather than ~100 us.

What JCS cannot write (I-JSON) raises ``NotCanonicalError`` naming the kind of value but
never the value: an integer beyond 2^53 without that form (2^53 + 1), NaN or infinity, a
string that is not Unicode text (a lone surrogate), a key that is not a string, or any
other Python type.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

__all__ = ["NotCanonicalError", "canonical"]

_SAFE = 2**53 - 1


class NotCanonicalError(ValueError):
    """A value RFC 8785 cannot write: refuse it rather than store something else."""


def canonical(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (dicts, lists, str, int, float, bool, None)."""
    try:
        return orjson.dumps(_prepared(value))
    except orjson.JSONEncodeError as exc:  # a lone surrogate, which orjson will not write
        raise NotCanonicalError("a string is not valid Unicode text") from exc


def _prepared(value: Any) -> Any:
    # Exact types: bool is an int, and a subclass could write itself differently.
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_SAFE <= value <= _SAFE else _large(value)
    if kind is float:
        return _number(value)
    if kind is dict:
        keys = list(value)
        if not all(type(k) is str for k in keys):
            raise NotCanonicalError("an object key is not a string")
        if not all(k.isascii() for k in keys):
            keys.sort(key=_utf16)  # code point order differs above U+FFFF
        else:
            keys.sort()
        return {k: _prepared(value[k]) for k in keys}
    if kind is list:
        return [_prepared(item) for item in value]
    raise NotCanonicalError(f"a {kind.__name__} is not a JSON value")


def _large(number: int) -> Any:
    # Beyond 2^53 an integer is kept only if RFC 8785 writes its double with the same
    # digits: 10**16 and 2**53 are, 2**53 + 1 (no double holds it) is not.
    try:
        text = rfc8785.dumps(float(number))
    except OverflowError:
        text = b""
    if text != str(number).encode():
        raise NotCanonicalError("an integer beyond 2^53 has no exact RFC 8785 form")
    return orjson.Fragment(text)


def _number(number: float) -> Any:
    try:
        return orjson.Fragment(rfc8785.dumps(number))
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonicalError("a number is NaN or infinite") from exc


def _utf16(key: str) -> bytes:
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise NotCanonicalError("an object key is not valid Unicode text") from exc
