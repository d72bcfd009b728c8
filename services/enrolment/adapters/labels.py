"""The enrolment service's own table: each account's email, for the authenticator label.

Filled from Kafka (``services.enrolment.consumers``). The projection may lag (right
after registration, or while a fresh replica catches up), so ``label_for`` also asks
the account stream, which is the truth, for an email event newer than the projection's
row: the label is the email from the first second, never the account id.
"""

from __future__ import annotations

import asyncpg

from shared.eventstore.streams import account_stream

__all__ = ["LABEL_EVENTS", "label_for", "save_label"]

LABEL_EVENTS = frozenset({"account.registered", "account.email_changed"})


async def save_label(conn: asyncpg.Connection, account_id: str, email: str, position: int) -> None:
    """Keep ``email`` unless a later event (a higher store position) set the label."""
    await conn.execute(
        """INSERT INTO enrolment_labels (account_id, email, position) VALUES ($1, $2, $3)
           ON CONFLICT (account_id) DO UPDATE
           SET email = excluded.email, position = excluded.position,
               updated_at = clock_timestamp()
           WHERE enrolment_labels.position < excluded.position""",
        account_id,
        email,
        position,
    )


async def label_for(pool: asyncpg.Pool, account_id: str) -> str:
    """The account's email: the projection's, unless the account stream holds a newer one.

    Only the stream's events after the projected one are read (by stream version, on the
    stream's index), so a current projection costs two index lookups.
    """
    async with pool.acquire() as conn:
        projected = await conn.fetchrow(
            "SELECT email, position FROM enrolment_labels WHERE account_id = $1", account_id
        )
        newer = await conn.fetchval(
            """SELECT data->>'email' FROM events
               WHERE stream_id = $1 AND event_type = ANY($2::text[])
                 AND stream_version > COALESCE(
                     (SELECT stream_version FROM events WHERE position = $3), 0)
               ORDER BY stream_version DESC LIMIT 1""",
            account_stream(account_id),
            sorted(LABEL_EVENTS),
            projected["position"] if projected else 0,
        )
    if newer:
        return str(newer)
    # An account whose stream has no email event is not one a token could be issued to.
    return str(projected["email"]) if projected else account_id
