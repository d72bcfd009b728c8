"""A sample instance of every domain event type, with recognisable secret values."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from typing import Any

from shared.domain.base import DomainEvent
from shared.eventstore.registry import REGISTRY

# Values a leak check can search for: if one shows up on Kafka or in a log, it leaked.
SECRET_MARKERS = {
    "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$SECRETSALT$SECRETHASHVALUE",
    "encrypted_secret": "v1.k1.SECRETNONCE.SECRETCIPHERTEXT",
    "recovery_code_hashes": ("SECRETCODEHASH1", "SECRETCODEHASH2"),
    "refresh_token_hash": "SECRETREFRESHHASH",
    "time_step": 59_049_173,
}

_BY_TYPE: dict[Any, Any] = {
    str: "sample",
    int: 3,
    datetime: datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    tuple[str, ...]: ("pwd", "otp"),
    bool: True,
    str | None: "sample",
}


def sample_event(type_name: str) -> DomainEvent:
    cls = REGISTRY.class_of(type_name)
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        values[field.name] = SECRET_MARKERS.get(field.name, _BY_TYPE[hints[field.name]])
    return cls(**values)


def secret_strings() -> list[str]:
    """Every secret marker as the text a leak would show."""
    found: list[str] = []
    for value in SECRET_MARKERS.values():
        found.extend(str(v) for v in (value if isinstance(value, tuple) else (value,)))
    return found
