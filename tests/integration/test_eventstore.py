"""The event store against a real PostgreSQL: concurrency, atomicity, commit order."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from shared.domain.events import EmailChanged, PasswordChanged
from shared.eventstore.envelope import EventMetadata, NewEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import (
    START,
    Checkpoint,
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
)

pytestmark = pytest.mark.integration


def stream() -> str:
    return f"account-{uuid.uuid4()}"


def changed(n: int) -> NewEvent:
    return NewEvent(EmailChanged(email=f"user{n}@example.org", previous_email=f"u{n - 1}@x.org"))


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool, REGISTRY)


async def count(pool: asyncpg.Pool, stream_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream_id))


async def test_append_then_read_back_in_order(store: EventStore) -> None:
    sid = stream()
    meta = EventMetadata(actor="account:1")
    events = [NewEvent(changed(i).event, meta) for i in range(1, 4)]
    assert await store.append(sid, events, 0) == 3
    read = await store.read_stream(sid)
    assert [r.stream_version for r in read] == [1, 2, 3]
    assert [r.event for r in read] == [e.event for e in events]
    assert [r.event_id for r in read] == [e.event_id for e in events]
    assert read[0].metadata == meta
    assert [r.stream_version for r in await store.read_stream(sid, after_version=1)] == [2, 3]
    assert await store.stream_version(sid) == 3


async def test_stale_expected_version_raises_and_writes_nothing(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    sid = stream()
    await store.append(sid, [changed(1)], 0)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(sid, [changed(2), changed(3)], 0)
    assert caught.value.stream_id == sid
    assert await count(pool, sid) == 1


async def test_expected_version_ahead_of_the_stream_is_refused(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    sid = stream()
    with pytest.raises(ConcurrencyError):
        await store.append(sid, [changed(1)], 5)
    assert await count(pool, sid) == 0


async def test_append_is_all_or_nothing(store: EventStore, pool: asyncpg.Pool) -> None:
    sid = stream()
    first = changed(1)
    await store.append(stream(), [first], 0)
    # The third event reuses an id already stored elsewhere: the whole append fails.
    batch = [changed(2), changed(3), NewEvent(changed(4).event, event_id=first.event_id)]
    with pytest.raises(DuplicateEventError):
        await store.append(sid, batch, 0)
    assert await count(pool, sid) == 0


async def test_fifty_concurrent_writers_at_one_version_exactly_one_wins(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    sid = stream()
    await store.append(sid, [changed(1)], 0)
    results = await asyncio.gather(
        *(store.append(sid, [changed(n)], 1) for n in range(50)), return_exceptions=True
    )
    wins = [r for r in results if r == 2]
    losses = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(wins) == 1
    assert len(losses) == 49
    assert await count(pool, sid) == 2


async def test_events_table_refuses_update_delete_and_truncate(
    store: EventStore, database_url: str
) -> None:
    sid = stream()
    await store.append(sid, [changed(1)], 0)
    owner = await asyncpg.connect(database_url)
    try:
        for sql in (
            "UPDATE events SET event_type = 'x'",
            "DELETE FROM events",
            "TRUNCATE events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(sql)
        assert await owner.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", sid) == 1
    finally:
        await owner.close()


async def test_service_role_may_append_and_read_but_not_change(
    database_url: str, postgres_url: str
) -> None:
    from tests.support.servers import with_database

    role, password = f"svc_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE twofa_auth")
    await admin.close()
    database = urlsplit(database_url).path.lstrip("/")
    service = await asyncpg.connect(with_database(postgres_url, database, role, password))
    try:
        assert not await service.fetchval(
            "SELECT pg_has_role(current_user, (SELECT tableowner FROM pg_tables"
            " WHERE tablename = 'events'), 'USAGE')"
        )
        await service.execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)"
            " VALUES ('account-x', 1, gen_random_uuid(), 't', '{}', '{}')"
        )
        for sql in ("UPDATE events SET data = '{}'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute(sql)
        for sql in ("DROP TABLE events", "ALTER TABLE events DISABLE TRIGGER USER"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute(sql)
    finally:
        await service.close()
        admin = await asyncpg.connect(database_url)
        await admin.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_read_all_never_skips_a_transaction_that_committed_late(
    store: EventStore, database_url: str
) -> None:
    """Two transactions: the lower position commits last; both are read, in one order."""
    early, late = stream(), stream()
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx_low = first.transaction()
        await tx_low.start()
        await store.append(early, [changed(1)], 0, connection=first)  # lower position
        tx_high = second.transaction()
        await tx_high.start()
        await store.append(late, [changed(2)], 0, connection=second)  # higher position
        await tx_high.commit()  # the higher position commits first

        # While the lower transaction runs, nothing past it is handed out.
        assert await store.read_all(START) == []

        await tx_low.commit()
        both = await store.read_all(START)
        assert [r.stream_id for r in both] == [early, late]
        assert both[0].position < both[1].position
        assert both[0].transaction_id < both[1].transaction_id
        # The same query gives the same order every time.
        assert [r.event_id for r in await store.read_all(START)] == [r.event_id for r in both]
        last = both[-1]
        assert await store.read_all(Checkpoint(last.transaction_id, last.position)) == []
    finally:
        await first.close()
        await second.close()


async def test_read_all_pages_through_everything_once(store: EventStore) -> None:
    ids = []
    for _ in range(7):
        batch = [changed(i) for i in range(3)]
        await store.append(stream(), batch, 0)
        ids += [e.event_id for e in batch]
    seen, checkpoint = [], START
    while page := await store.read_all(checkpoint, limit=4):
        seen += [r.event_id for r in page]
        checkpoint = Checkpoint(page[-1].transaction_id, page[-1].position)
    assert seen == ids


async def test_old_rows_are_read_through_upcasters(store: EventStore, pool: asyncpg.Pool) -> None:
    sid = stream()
    # A row as an older release wrote it: schema version 1 of password_changed is current,
    # so fake an older layout under a test registry that knows version 2.
    from dataclasses import dataclass
    from typing import Any

    from shared.domain.base import DomainEvent
    from shared.eventstore.registry import EventRegistry

    registry = EventRegistry()

    @registry.register
    @dataclass(frozen=True, slots=True, kw_only=True)
    class PasswordChangedV2(DomainEvent):
        type = "account.password_changed"
        schema_version = 2
        password_hash: str
        reason: str

    @registry.upcaster("account.password_changed", 1)
    def add_reason(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "reason": "unknown"}

    await store.append(sid, [NewEvent(PasswordChanged(password_hash="h"))], 0)
    upgraded = await EventStore(pool, registry).read_stream(sid)
    assert upgraded[0].event == PasswordChangedV2(password_hash="h", reason="unknown")


async def test_commit_order_is_numeric_across_a_power_of_ten(
    store: EventStore, database_url: str
) -> None:
    """Regression: ordering by the text form of xid8 put "1000" before "997" and skipped.

    Rows stand in for transactions whose ids cross the power of ten below the server's
    current id (so they are all below the commit-safe horizon), whatever that id is.
    """
    conn = await asyncpg.connect(database_url)
    try:
        current = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        boundary = 10 ** (len(str(current - 3)) - 1)
        assert boundary >= 10 and boundary + 1 < current
        ids = []
        for n, xid in enumerate(range(boundary - 2, boundary + 2)):  # 98, 99, 100, 101 ...
            event_id = uuid.uuid4()
            meta = EventMetadata(correlation_id=uuid.uuid4())
            await conn.execute(
                """INSERT INTO events (transaction_id, stream_id, stream_version, event_id,
                       event_type, data, metadata)
                   VALUES ($1::text::xid8, $2, 1, $3, 'account.password_changed', $4::jsonb,
                           $5::jsonb)""",
                str(xid),
                stream(),
                event_id,
                orjson.dumps({"password_hash": f"h{n}"}).decode(),
                meta.to_json().decode(),
            )
            ids.append(event_id)
    finally:
        await conn.close()
    seen, checkpoint = [], START
    while page := await store.read_all(checkpoint, limit=3):
        seen += [r.event_id for r in page]
        checkpoint = Checkpoint(page[-1].transaction_id, page[-1].position)
    assert seen == ids
