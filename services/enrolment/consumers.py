"""The enrolment service's Kafka reactions: keep each account's label current.

Fed by ``account.registered`` and ``account.email_changed`` through the shared consumer
loop (once per event id, verified like every consumer's input).
"""

from __future__ import annotations

import asyncpg

from services.enrolment.adapters.labels import LABEL_EVENTS, save_label
from shared.messaging.consumer import Delivery
from shared.messaging.integration import IntegrationEvent

__all__ = ["LABEL_EVENTS", "project_label"]


async def project_label(
    conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
) -> None:
    """Store the email an account event carries as that account's label."""
    if event.type not in LABEL_EVENTS:
        return
    email = event.data.get("email")
    if not isinstance(email, str):
        raise ValueError(f"{event.type} {event.id} carries no email")
    await save_label(conn, event.subject, email, event.sequence)
