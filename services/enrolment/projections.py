"""The enrolment service's projection: each account's email, for the authenticator label.

Fed by ``account.registered`` and ``account.email_changed`` from Kafka through the
shared consumer loop (once per event id). A label is not a security decision, so a
lagging projection is fine: until the event arrives the label is the account id.
"""

from __future__ import annotations

import asyncpg

from shared.consumer import Delivery
from shared.integration import IntegrationEvent

__all__ = ["LABEL_EVENTS", "project_label"]

LABEL_EVENTS = frozenset({"account.registered", "account.email_changed"})


async def project_label(
    conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
) -> None:
    if event.type not in LABEL_EVENTS:
        return
    email = event.data.get("email")
    if not isinstance(email, str):
        raise ValueError(f"{event.type} {event.id} carries no email")
    await conn.execute(
        """INSERT INTO enrolment_labels (account_id, email, position) VALUES ($1, $2, $3)
           ON CONFLICT (account_id) DO UPDATE
           SET email = excluded.email, position = excluded.position,
               updated_at = clock_timestamp()
           WHERE enrolment_labels.position < excluded.position""",
        event.subject,
        email,
        event.sequence,
    )
