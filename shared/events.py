"""Domain events: typed classes, a registry by type name, orjson mapping, upcasting.

An event is a frozen dataclass with a ``type`` name and a ``schema_version``. A registry
turns a stored row (type, schema version, JSON data) back into the class; an upcaster
registered for ``(type, version)`` lifts data of an old schema one version up, so old
rows are read as the current class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson

__all__ = [
    "DomainEvent",
    "EventMetadata",
    "EventRegistry",
    "NewEvent",
    "RecordedEvent",
    "UnknownEventTypeError",
]

JSONDict = dict[str, Any]
Upcaster = Callable[[JSONDict], JSONDict]
E = TypeVar("E", bound="type[DomainEvent]")


def _uuid(text: str) -> uuid.UUID:
    # uuid.UUID(text) validates generously and costs ~1.8 µs; stored ids are canonical.
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", int(text.replace("-", ""), 16))
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


class UnknownEventTypeError(LookupError):
    """A stored event names a type this registry does not know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    """Base of every domain event; subclasses set ``type`` and their fields."""

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def to_data(self) -> JSONDict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# EventMetadata and RecordedEvent are built for every row the relay and the audit read,
# so they are plain slotted dataclasses (a frozen one costs about 1.5 µs more per object);
# treat them as immutable all the same.
@dataclass(slots=True, kw_only=True)
class EventMetadata:
    """Who and what caused an event; travels with it into the audit log."""

    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    actor: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_dict(cls, raw: JSONDict) -> EventMetadata:
        causation = raw.get("causation_id")
        return cls(
            correlation_id=_uuid(raw["correlation_id"]),
            causation_id=_uuid(causation) if causation else None,
            actor=raw.get("actor"),
            occurred_at=datetime.fromisoformat(raw["occurred_at"]),
        )


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended, with its id and metadata fixed."""

    event: DomainEvent
    metadata: EventMetadata = field(default_factory=EventMetadata)
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(slots=True)
class RecordedEvent:
    """An event as the store holds it, with its place in the stream and in commit order."""

    position: int
    transaction_id: int
    stream_id: str
    stream_version: int
    event_id: uuid.UUID
    event: DomainEvent
    metadata: EventMetadata
    recorded_at: datetime

    @property
    def account_id(self) -> str:
        """Streams are named ``<category>-<account id>``; Kafka keys by the account id."""
        return self.stream_id.partition("-")[2]

    @property
    def category(self) -> str:
        return self.stream_id.partition("-")[0]


class EventRegistry:
    """Event classes by type name, plus the upcasters that bring old data up to date."""

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._parsers: dict[str, dict[str, Callable[[Any], Any]]] = {}

    def register(self, cls: E) -> E:
        """Class decorator: make ``cls`` readable from the store."""
        name = cls.type
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"event type {name!r} registered twice")
        self._classes[name] = cls
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: a function that turns data of ``from_version`` into ``from_version+1``."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = fn
            return fn

        return decorate

    def types(self) -> Iterable[str]:
        return self._classes.keys()

    def class_of(self, type_name: str) -> type[DomainEvent]:
        try:
            return self._classes[type_name]
        except KeyError:
            raise UnknownEventTypeError(type_name) from None

    def decode(self, type_name: str, schema_version: int, data: JSONDict) -> DomainEvent:
        """Build the current class from stored data, upcasting old schema versions."""
        cls = self.class_of(type_name)
        version = schema_version
        while version < cls.schema_version:
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise UnknownEventTypeError(f"no upcaster for {type_name} v{version}")
            data = step(data)
            version += 1
        parsers = self._parsers.get(type_name)
        if parsers is None:
            parsers = self._parsers[type_name] = _field_parsers(cls)
        return cls(
            **{k: parsers[k](v) if k in parsers and v is not None else v for k, v in data.items()}
        )

    @staticmethod
    def encode(event: DomainEvent) -> bytes:
        return orjson.dumps(event)


def _parser_for(hint: Any) -> Callable[[Any], Any] | None:
    """JSON gives strings and lists; rebuild the few richer field types events use."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _parser_for(inner[0]) if len(inner) == 1 else None
    if hint is datetime:
        return datetime.fromisoformat
    if hint is uuid.UUID:
        return uuid.UUID
    if typing.get_origin(hint) is tuple:
        return tuple
    return None


def _field_parsers(cls: type[DomainEvent]) -> dict[str, Callable[[Any], Any]]:
    hints = typing.get_type_hints(cls)
    parsers = {}
    for f in dataclasses.fields(cls):
        parser = _parser_for(hints[f.name])
        if parser is not None:
            parsers[f.name] = parser
    return parsers
