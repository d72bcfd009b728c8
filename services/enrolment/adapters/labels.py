"""The enrolment service's own table: each account's email, for the authenticator label.

Filled from Kafka (``services.enrolment.consumers``). A label is not a security
decision, so a lagging projection is fine: until the event arrives the label is the
account id.
"""

from __future__ import annotations

import asyncpg

__all__ = ["label_for", "save_label"]


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
    """The account's email from the projection; the account id until it arrives."""
    email = await pool.fetchval(
        "SELECT email FROM enrolment_labels WHERE account_id = $1", account_id
    )
    return str(email) if email else account_id
