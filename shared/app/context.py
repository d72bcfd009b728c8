"""Who asks, and the one way use cases build the metadata of the events they append."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shared.domain.base import DomainEvent
from shared.eventstore.envelope import EventMetadata, NewEvent
from shared.platform.clock import Clock, utc_now

__all__ = ["Context", "actor_of"]


def actor_of(account_id: str) -> str:
    """How an account is named as the actor of an event."""
    return f"account:{account_id}"


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks, and the ids that tie the events of one request (or reaction) together."""

    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    actor: str | None = None
    clock: Clock = utc_now  # the service's clock: occurred-at follows it (tests move it)
    causation_id: uuid.UUID | None = None  # the event a consumer is reacting to

    def acting_for(self, account_id: str) -> Context:
        """The same request, with the account as the actor."""
        return replace(self, actor=actor_of(account_id))

    def new(self, events: Sequence[DomainEvent], actor: str | None = None) -> list[NewEvent]:
        """``events`` ready to append, all with this request's metadata."""
        meta = EventMetadata(
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            actor=actor or self.actor,
            occurred_at=self.clock(),
        )
        return [NewEvent(event, meta) for event in events]
