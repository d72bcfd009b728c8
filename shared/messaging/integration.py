"""Integration events: the public contract on Kafka, separate from the domain events.

A domain event reaches Kafka only through an explicit ``Publish`` entry that names the
public type and the fields it may carry; everything else, secrets above all, stays in the
store. A type with no entry at all is an error (``UnmappedEventError``), never a silent
pass-through; ``INTERNAL`` marks a type that is deliberately not published.

On the wire: CloudEvents 1.0 in binary mode, attributes as Kafka headers
(``ce_id``, ``ce_type``, ``ce_source``, ``ce_specversion``, ``ce_time``, ``ce_subject``,
``content-type``, plus the extensions ``ce_dataschema``, ``ce_correlationid``,
``ce_causationid``, ``ce_actor``, ``ce_sequence``), the data as a JSON body in its RFC 8785
canonical form (what the relay signs, ``shared.messaging.signing``; parsed with orjson).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from shared.eventstore.envelope import RecordedEvent
from shared.security.canonical import canonical

__all__ = [
    "INTERNAL",
    "IntegrationEvent",
    "IntegrationMap",
    "MalformedEventError",
    "Publish",
    "UnmappedEventError",
]

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_REQUIRED = ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "ce_subject")


class UnmappedEventError(LookupError):
    """A domain event type has no public mapping: publishing it could leak a secret."""


class MalformedEventError(ValueError):
    """A Kafka record is not a twofa integration event."""


@dataclass(frozen=True, slots=True)
class IntegrationEvent:
    """One public event, as it travels on Kafka."""

    id: uuid.UUID
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    dataschema: str
    sequence: int
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    actor: str | None = None

    @property
    def key(self) -> bytes:
        """Kafka key: the account id, so one account's events stay in order."""
        return self.subject.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            ("ce_id", str(self.id)),
            ("ce_type", self.type),
            ("ce_source", self.source),
            ("ce_specversion", SPEC_VERSION),
            ("ce_time", self.time.isoformat()),
            ("ce_subject", self.subject),
            ("ce_dataschema", self.dataschema),
            ("ce_sequence", str(self.sequence)),
            ("content-type", CONTENT_TYPE),
        ]
        if self.correlation_id is not None:
            pairs.append(("ce_correlationid", str(self.correlation_id)))
        if self.causation_id is not None:
            pairs.append(("ce_causationid", str(self.causation_id)))
        if self.actor is not None:
            pairs.append(("ce_actor", self.actor))
        return [(k, v.encode()) for k, v in pairs]

    def body(self) -> bytes:
        """The data as RFC 8785 canonical JSON: the exact bytes the signature covers."""
        return canonical(self.data)

    @classmethod
    def from_kafka(
        cls, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> IntegrationEvent:
        """Parse a Kafka record; ``MalformedEventError`` for anything not ours."""
        try:
            attrs = {k: v.decode() for k, v in headers}
        except (UnicodeDecodeError, AttributeError, ValueError) as exc:
            raise MalformedEventError("headers are not UTF-8 text") from exc
        missing = [h for h in _REQUIRED if h not in attrs]
        if missing:
            raise MalformedEventError(f"missing CloudEvents headers: {', '.join(missing)}")
        if attrs["ce_specversion"] != SPEC_VERSION:
            raise MalformedEventError(f"unsupported specversion {attrs['ce_specversion']!r}")
        if value is None:
            raise MalformedEventError("empty body")
        try:
            data = orjson.loads(value)
            event = cls(
                id=uuid.UUID(attrs["ce_id"]),
                type=attrs["ce_type"],
                source=attrs["ce_source"],
                subject=attrs["ce_subject"],
                time=datetime.fromisoformat(attrs["ce_time"]),
                data=data,
                dataschema=attrs.get("ce_dataschema", ""),
                sequence=int(attrs.get("ce_sequence", "0")),
                correlation_id=_uuid_or_none(attrs.get("ce_correlationid")),
                causation_id=_uuid_or_none(attrs.get("ce_causationid")),
                actor=attrs.get("ce_actor"),
            )
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise MalformedEventError(str(exc)) from exc
        if not isinstance(data, dict):
            raise MalformedEventError("body is not a JSON object")
        return event


def _uuid_or_none(text: str | None) -> uuid.UUID | None:
    return uuid.UUID(text) if text else None


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a domain event as ``public_type`` carrying only ``fields``."""

    public_type: str
    fields: tuple[str, ...] = ()
    schema_version: int = 1


INTERNAL: Final = None


class IntegrationMap:
    """The explicit domain → public mapping the relay and the audit rebuild share."""

    def __init__(self, mappings: Mapping[str, Publish | None]) -> None:
        self._mappings = dict(mappings)

    def mapped_types(self) -> set[str]:
        return set(self._mappings)

    def public_types(self) -> set[str]:
        return {p.public_type for p in self._mappings.values() if p is not None}

    def to_integration(self, recorded: RecordedEvent) -> IntegrationEvent | None:
        """The public form of ``recorded``, or ``None`` for an internal event."""
        try:
            rule = self._mappings[recorded.event.type]
        except KeyError:
            raise UnmappedEventError(recorded.event.type) from None
        if rule is None:
            return None
        full = recorded.event.to_data()
        data = {name: _jsonable(full[name]) for name in rule.fields}
        meta = recorded.metadata
        return IntegrationEvent(
            id=recorded.event_id,
            type=rule.public_type,
            source=f"/twofa/{recorded.category}",
            subject=recorded.account_id,
            time=meta.occurred_at,
            data=data,
            dataschema=f"urn:twofa:event:{rule.public_type}:v{rule.schema_version}",
            sequence=recorded.position,
            correlation_id=meta.correlation_id,
            causation_id=meta.causation_id,
            actor=meta.actor,
        )


def _jsonable(value: Any) -> Any:
    # orjson writes these natively; a round trip makes the body exactly what consumers read.
    return orjson.loads(orjson.dumps(value))
