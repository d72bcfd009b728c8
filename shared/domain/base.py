"""The base of every domain event, and the one generic fold.

An event is a frozen dataclass with a ``type`` name and a ``schema_version``; an aggregate
is a fold of its events: ``fold(evolve, state, events)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = ["DomainEvent", "JSONDict", "fold"]

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    """Base of every domain event; subclasses set ``type`` and their fields."""

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def to_data(self) -> JSONDict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


S = TypeVar("S")


def fold(evolve: Callable[[S, DomainEvent], S], state: S, events: Iterable[DomainEvent]) -> S:
    """The state after ``events``, one ``evolve`` at a time."""
    for event in events:
        state = evolve(state, event)
    return state
