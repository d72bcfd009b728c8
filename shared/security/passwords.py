"""Passwords as NIST SP 800-63B asks: long rather than complex, blocklisted, argon2id.

There are no composition rules. A password is acceptable when it is 8 to 128 code points
after NFKC normalisation, is not on the bundled list of common passwords, and is not the
username, the email address or its local part (case-insensitively).

Passwords are NFKC-normalised before they are hashed as well, so the same password typed
on another keyboard or platform (composed or decomposed accents, full-width letters)
still verifies. ``data/common-passwords.txt`` is a list of frequently breached passwords
of 8+ characters and their usual variants (digits and years appended), lower case.
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from importlib import resources

import argon2
from argon2.exceptions import Argon2Error

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "PasswordHasher", "check_password"]

MIN_LENGTH = 8
MAX_LENGTH = 128
# NFKC shrinks text at most ~4x, so anything longer than this is over MAX_LENGTH; refuse
# it before normalising or hashing so a huge request body costs nothing.
_MAX_INPUT = 4096


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which no keyboard can type
        return False
    return True


@functools.cache
def _common_passwords() -> frozenset[str]:
    listing = resources.files("shared") / "data" / "common-passwords.txt"
    lines = listing.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line.strip())


class PasswordHasher:
    """argon2id with argon2-cffi's default parameters (RFC 9106 low-memory profile)."""

    def __init__(
        self,
        *,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_cost: int = argon2.DEFAULT_MEMORY_COST,
        parallelism: int = argon2.DEFAULT_PARALLELISM,
    ) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Unknown usernames are checked against this so they answer as slowly as known ones.
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """The salted hash to store (ValueError if ``password`` is not valid Unicode)."""
        return self._argon2.hash(_normalize(password))

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` is the one ``stored_hash`` was made from; never raises."""
        if len(password) > _MAX_INPUT:
            return False
        try:
            return self._argon2.verify(stored_hash, _normalize(password))
        except (Argon2Error, ValueError):  # mismatch, unreadable hash, lone surrogate
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with other parameters (True if unreadable)."""
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except ValueError:
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the time of a real ``verify``, for a username that does not exist."""
        self.verify(self._dummy_hash, password)


def check_password(password: str, *, username: str = "", email: str = "") -> list[str]:
    """What is wrong with ``password`` as short sentences; an empty list means acceptable."""
    if len(password) > _MAX_INPUT:
        return [f"must be at most {MAX_LENGTH} characters"]
    normalized = _normalize(password)
    problems: list[str] = []
    if len(normalized) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if len(normalized) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    if not _is_unicode_text(normalized):
        problems.append("contains characters that are not valid text")
    folded = normalized.casefold()
    if folded in _common_passwords():
        problems.append("is too common: it appears in lists of breached passwords")
    if username and folded == _normalize(username).casefold():
        problems.append("must not be the same as your username")
    address = _normalize(email).casefold()
    if folded in {address, address.rpartition("@")[0]} - {""}:
        problems.append("must not be the same as your email address")
    return problems
