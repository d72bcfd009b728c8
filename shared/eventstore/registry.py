"""Event classes by stored type name, orjson mapping, upcasting.

The registry turns a stored row (type, schema version, JSON data) back into the class;
an upcaster registered for ``(type, version)`` lifts data of an old schema one version
up, so old rows are read as the current class. ``REGISTRY`` holds every domain event.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import orjson

from shared.domain.base import DomainEvent, JSONDict
from shared.domain.events import ALL_EVENTS

__all__ = ["REGISTRY", "EventRegistry", "UnknownEventTypeError"]


Upcaster = Callable[[JSONDict], JSONDict]
E = TypeVar("E", bound="type[DomainEvent]")


class UnknownEventTypeError(LookupError):
    """A stored event names a type this registry does not know."""


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


def _registry_of(classes: Iterable[type[DomainEvent]]) -> EventRegistry:
    registry = EventRegistry()
    for cls in classes:
        registry.register(cls)
    return registry


REGISTRY = _registry_of(ALL_EVENTS)
