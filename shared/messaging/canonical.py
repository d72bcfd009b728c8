"""RFC 8785 (JCS) canonical JSON, fast for what twofa publishes.

The relay canonicalises every record twice (the value, and the object it signs) and the
pure-Python ``rfc8785`` costs tens of microseconds a time. For JSON without floats,
without integers beyond 2**53 and with ASCII keys, orjson with sorted keys writes the
very same bytes (its string escaping is JCS's for every code point, and ASCII keys sort
the same by code point as by UTF-16 unit; ``tests/unit/test_signing.py`` checks both);
anything else goes through ``rfc8785``.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

__all__ = ["canonical"]

_SAFE_INTEGER = 2**53 - 1


def canonical(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value``."""
    if _plain(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return rfc8785.dumps(value)


def _plain(value: Any) -> bool:
    """Whether orjson's sorted output of ``value`` is its canonical form."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    return False  # floats (JCS writes them as JavaScript does), and anything else
