"""The audit service under test: a security bearer's token, accounts doing things, waiting
for the log to hold what the store holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from fastapi import FastAPI

from shared.domain import events as ev
from shared.eventstore.envelope import EventMetadata, NewEvent, RecordedEvent
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.platform.config import Settings
from shared.security.tokens import TokenIssuer
from tests.support.clock import Clock
from tests.support.polling import eventually
from tests.support.samples import sample_event

# The stored bytes too: a rebuild must give the very bytes ingestion stored.
CHAIN_ROWS = """SELECT event_id, chain, chain_seq, content, hash FROM audit.entries
    ORDER BY chain, chain_seq"""


@dataclass
class Audit:
    client: httpx.AsyncClient
    other: httpx.AsyncClient  # a second audit instance in the same consumer group
    apps: tuple[FastAPI, FastAPI]
    store: EventStore
    settings: Settings
    clock: Clock
    token: str
    topic: str

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


def issue(
    settings: Settings, clock: Clock, roles: tuple[str, ...] = ("security",), **kw: object
) -> str:
    """An access token (aal2) with ``roles``, signed with ``settings``' keys."""
    issuer = TokenIssuer(settings.signing_keys(), issuer=settings.jwt_issuer)
    return issuer.issue_access(
        subject=str(uuid.uuid4()),
        audience=str(kw.get("audience", settings.jwt_audience)),
        session_id=uuid.uuid4().hex,
        auth_time=clock(),
        amr=("pwd", "otp", "mfa"),
        acr="aal2",
        roles=roles,
        now=clock() - timedelta(minutes=float(str(kw.get("age_minutes", 0)))),
    )


async def activity(store: EventStore, accounts: int = 6, each: int = 5) -> dict[str, list[str]]:
    """Some accounts doing things; returns each account's event ids in order."""
    ids: dict[str, list[str]] = {}
    for n in range(accounts):
        account = str(uuid.uuid4())
        meta = EventMetadata(actor=f"account:{account}")
        first = [
            NewEvent(
                ev.AccountRegistered(username=f"u{n}", email=f"u{n}@x.org", password_hash="H"), meta
            ),
            *(
                NewEvent(
                    ev.LoginFailed(
                        reason="password",
                        consecutive_failures=i + 1,
                        trusted_device=False,
                        at=meta.occurred_at,
                    ),
                    EventMetadata(actor="anonymous"),
                )
                for i in range(each - 1)
            ),
        ]
        await store.append(f"account-{account}", first, 0)
        second = [
            NewEvent(
                ev.OtpFailed(
                    method="totp", purpose="login", reason="invalid_code", consecutive_failures=1
                ),
                meta,
            )
            for _ in range(n % 3)
        ]
        await store.append(f"twofactor-{account}", second, 0)
        ids[account] = [str(e.event_id) for e in first + second]
    return ids


async def log_holds(pool: asyncpg.Pool, count: int) -> None:
    """Wait until the audit log holds ``count`` entries."""

    async def enough() -> bool:
        got = await pool.fetchval("SELECT count(*) FROM audit.entries")
        return bool(got >= count)

    await eventually(enough, within=60)


def _internal(type_name: str) -> bool:
    sample = RecordedEvent(
        position=1,
        transaction_id=1,
        stream_id=f"account-{uuid.uuid4()}",
        stream_version=1,
        event_id=uuid.uuid4(),
        event=sample_event(type_name),
        metadata=EventMetadata(),
        recorded_at=datetime.now(UTC),
    )
    return PUBLIC_EVENTS.to_integration(sample) is None


# The types that never leave the store (a username's claim, a refresh), so never reach
# the audit log.
INTERNAL_TYPES = sorted(t for t in PUBLIC_EVENTS.mapped_types() if _internal(t))


async def log_holds_the_store(store: EventStore) -> int:
    """Wait until the audit log holds an entry for every stored event that is published;
    their number."""
    count = int(
        await store.pool.fetchval(
            "SELECT count(*) FROM events WHERE NOT event_type = ANY($1)", INTERNAL_TYPES
        )
    )
    await log_holds(store.pool, count)
    return count
