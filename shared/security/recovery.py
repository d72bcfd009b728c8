"""Single-use recovery codes: NIST SP 800-63B-4 look-up secrets.

A code is 16 symbols drawn by ``secrets`` from Crockford's base32 alphabet
(``0-9`` and ``a-z`` without ``i``, ``l``, ``o``, ``u``), so 80 bits, shown as
``xxxx-xxxx-xxxx-xxxx`` in lower case. That alphabet has no two symbols a person
confuses, and like Crockford we read ``i``/``l`` as ``1`` and ``o`` as ``0``: those
letters never appear in a code, so the mapping costs no entropy and forgives a misread.

Stored codes are ``argon2id(HMAC-SHA256(pepper, code))``. The pepper is a server key
kept out of the database, so a leaked database alone cannot be searched for codes;
80 bits of entropy make the small argon2 parameters enough.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import argon2
from argon2.exceptions import Argon2Error

__all__ = ["ALPHABET", "CODE_LENGTH", "RecoveryCodeHasher", "new_codes", "normalize"]

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
CODE_LENGTH = 16
_GROUP = 4
_CONFUSABLES = str.maketrans({"i": "1", "l": "1", "o": "0"})
_IGNORED = str.maketrans("", "", "- \t\r\n")
_MAX_INPUT = 64  # longer input is refused before any work is done on it
_MIN_PEPPER_BYTES = 32


def _new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def _display(compact: str) -> str:
    return "-".join(compact[i : i + _GROUP] for i in range(0, CODE_LENGTH, _GROUP))


def new_codes(count: int = 6) -> list[str]:
    """``count`` fresh, distinct codes in display form (``xxxx-xxxx-xxxx-xxxx``)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    codes: list[str] = []
    while len(codes) < count:  # a repeat is a 2**-80 event, but distinct is a promise
        code = _new_code()
        if code not in codes:
            codes.append(code)
    return [_display(code) for code in codes]


def normalize(code: str) -> str | None:
    """The compact 16-symbol form of ``code``, or None if it cannot be a recovery code.

    Case, dashes and spaces are ignored; ``i``/``l`` read as ``1`` and ``o`` as ``0``.
    Any other character, non-ASCII included, makes it None. Never raises on a str.
    """
    if not isinstance(code, str) or len(code) > _MAX_INPUT or not code.isascii():
        return None  # ASCII first: str.lower() would turn the Kelvin sign into 'k'
    compact = code.translate(_IGNORED).lower().translate(_CONFUSABLES)
    if len(compact) != CODE_LENGTH or not all(symbol in ALPHABET for symbol in compact):
        return None
    return compact


class RecoveryCodeHasher:
    """Hashes recovery codes for storage and finds which stored hash a code matches."""

    def __init__(
        self,
        pepper: bytes,
        *,
        time_cost: int = 1,
        memory_cost_kib: int = 4096,
        parallelism: int = 1,
    ) -> None:
        if len(pepper) < _MIN_PEPPER_BYTES:
            raise ValueError(f"pepper must be at least {_MIN_PEPPER_BYTES} bytes")
        self._pepper = bytes(pepper)
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Spent codes are checked against this, so they cost what a live one does.
        self._dummy_hash = self._argon2.hash(self._peppered(_new_code()))

    def _peppered(self, compact: str) -> bytes:
        return hmac.new(self._pepper, compact.encode("ascii"), hashlib.sha256).digest()

    def _verify(self, stored_hash: str, peppered: bytes) -> bool:
        try:
            return self._argon2.verify(stored_hash, peppered)
        except (Argon2Error, ValueError):  # mismatch, or a hash argon2 cannot read
            return False

    def hash(self, code: str) -> str:
        """The salted argon2id hash to store for ``code`` (ValueError if malformed)."""
        compact = normalize(code)
        if compact is None:
            raise ValueError("not a recovery code")
        return self._argon2.hash(self._peppered(compact))

    def verify(self, stored_hash: str, code: str) -> bool:
        """Whether ``code`` is the one ``stored_hash`` was made from; never raises."""
        compact = normalize(code)
        return compact is not None and self._verify(stored_hash, self._peppered(compact))

    def match(self, stored_hashes: Sequence[str | None], code: str) -> int | None:
        """The index of the hash ``code`` matches, else None; None entries are spent.

        Every entry is verified, spent ones against a dummy hash, so the time taken
        does not reveal which index matched or how many codes are spent.
        """
        compact = normalize(code)
        if compact is None:
            return None
        peppered = self._peppered(compact)
        found: int | None = None
        for index, stored in enumerate(stored_hashes):
            ok = self._verify(self._dummy_hash if stored is None else stored, peppered)
            if ok and stored is not None and found is None:
                found = index
        return found
