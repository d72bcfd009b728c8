"""Stream names: ``<category>-<id>``; Kafka keys each event by the part after the dash."""

from __future__ import annotations


def account_stream(account_id: str) -> str:
    return f"account-{account_id}"


def twofactor_stream(account_id: str) -> str:
    return f"twofactor-{account_id}"


def username_stream(username: str) -> str:
    """Claims a username for one account: unique by the stream's version (case-folded)."""
    return f"username-{username.casefold()}"
