"""The independent truth of the fault tests can fail: each check, fed a wrong world.

The old checks could not: audit duplicates were counted in ``audit.entries``, whose
``event_id`` is unique (always 0), a 2xx answer that stored its event twice passed, and
the list of events came through the relay's own read and mapping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from services.audit.adapters import log_store
from services.audit.domain.chain import Entry
from shared.eventstore.registry import REGISTRY
from shared.messaging.contract import PUBLIC_EVENTS
from tests.support import truth
from tests.support.truth import Answer, Ledger, Written

GROUPS = ("audit", "sessions")


class Killed(Exception):
    """A process dying mid-transaction: what it wrote rolls back."""


# -- the contract's type names ----------------------------------------------------------


def test_the_published_types_are_the_contracts_declaration() -> None:
    published = truth.published_domain_types(REGISTRY.types())
    assert published | truth.INTERNAL == PUBLIC_EVENTS.mapped_types()
    assert not published & truth.INTERNAL
    assert {truth.RENAMED.get(t, t) for t in published} == PUBLIC_EVENTS.public_types()
    assert truth.public_types() == PUBLIC_EVENTS.public_types()


# -- each 2xx answer: its events, once each ----------------------------------------------


def _written(kind: str, corr: str, session: str | None = None) -> Written:
    return Written(str(uuid.uuid4()), kind, corr, session)


def test_an_answer_whose_event_was_stored_twice_is_a_duplicate() -> None:
    # The old check asked only for "some" event of each promised type: this passed.
    corr = str(uuid.uuid4())
    first, again = _written("twofa.enabled", corr), _written("twofa.enabled", corr)
    said, surplus, missing = truth.check_answers(
        [Answer(corr, "confirm", frozenset({"twofa.enabled"}))], [first, again]
    )
    assert said == [f"confirm {corr}: twofa.enabled x2"]
    assert surplus == {again.event_id}
    assert missing == 0


def test_an_answer_with_no_event_or_another_one_is_reported() -> None:
    corr = str(uuid.uuid4())
    said, surplus, missing = truth.check_answers(
        [Answer(corr, "login", frozenset({"login.succeeded", "session.started"}))],
        [_written("login.succeeded", corr), _written("login.failed", corr)],
    )
    assert said == [
        f"login {corr}: no session.started stored",
        f"login {corr}: unexpected login.failed",
    ]
    assert (surplus, missing) == (set(), 1)


def test_a_session_revoked_twice_is_a_duplicate() -> None:
    once = _written("session.revoked", "c1", "s1")
    twice = [_written("session.revoked", "c2", "s2"), _written("session.revoked", "c3", "s2")]
    assert truth.revoked_twice([once, *twice]) == {twice[1].event_id}


# -- each stored event: on Kafka, in every group's effects, in the audit log -------------


def _ledger(event: Written, **counts: Counter[object]) -> Ledger:
    everywhere = {
        "kafka": Counter({event.event_id: 1}),
        "deliveries": Counter({(g, event.event_id): 1 for g in GROUPS}),
        "processed": Counter({(g, event.event_id): 1 for g in GROUPS}),
        "audited": Counter({event.event_id: 1}),
        "refused": Counter[str](),
    }
    return Ledger(GROUPS, **{**everywhere, **counts})  # type: ignore[arg-type]


def test_an_event_the_relay_skipped_is_lost_in_every_count() -> None:
    # Skipped by the relay's read: never on Kafka, never consumed, never audited. The old
    # list came through that same read, so it lacked the event too and counted 0 lost.
    event = _written("account.registered", "c")
    ledger = _ledger(event, kafka=Counter(), processed=Counter(), audited=Counter())
    assert ledger.lost(event) == ["Kafka", *GROUPS, "audit log"]
    tally = ledger.tally([event], set())
    assert (tally.written, tally.lost, tally.duplicated) == (1, 1, 0)


def test_redelivery_is_reported_but_not_a_duplicate() -> None:
    event = _written("account.registered", "c")
    ledger = _ledger(
        event,
        kafka=Counter({event.event_id: 3}),
        deliveries=Counter({("audit", event.event_id): 2, ("sessions", event.event_id): 1}),
    )
    tally = ledger.tally([event], set())
    assert (tally.on_kafka, tally.redelivered, tally.deduplicated) == (3, 2, 1)
    assert (tally.effects, tally.audited, tally.lost, tally.duplicated) == (2, 1, 0, 0)


def test_a_refused_audit_insert_is_a_duplicate_counted_once_per_event() -> None:
    event = _written("account.registered", "c")
    ledger = _ledger(event, refused=Counter({event.event_id: 2}))
    assert ledger.duplicated(event) == ["audit inserts refused"]
    tally = ledger.tally([event], {event.event_id})  # also written twice: still one event
    assert (tally.refused, tally.duplicated) == (2, 1)


# -- the counters in the database ------------------------------------------------------


def _entry(event_id: uuid.UUID, chain: str, seq: int) -> Entry:
    return Entry(
        event_id=event_id,
        chain=chain,
        chain_seq=seq,
        event_type="account.registered",
        source="/twofa/account",
        actor=None,
        correlation_id=None,
        causation_id=None,
        occurred_at=datetime.now(UTC),
        store_position=seq,
        dataschema="urn:twofa:event:account.registered:v1",
        data={},
    )


async def _insert(conn: asyncpg.Connection, entry: Entry) -> None:
    await log_store.insert(
        conn, entry, entry.content(), b"p", b"h", partition=0, offset=entry.chain_seq
    )


async def test_an_audit_insert_the_unique_index_refuses_is_counted(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        await truth.install_counters(conn, database_url)
        stored, chain = uuid.uuid4(), str(uuid.uuid4())
        await _insert(conn, _entry(stored, chain, 1))
        # An ingest that forgot to ask whether the log holds the event: the index refuses.
        with pytest.raises(asyncpg.UniqueViolationError):
            await _insert(conn, _entry(stored, chain, 2))
        # The same, twice in one transaction.
        twice = uuid.uuid4()
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await _insert(conn, _entry(twice, chain, 3))
                await _insert(conn, _entry(twice, chain, 4))
        # A batch rolled back (a kill mid-batch) is no attempt: its retry is no duplicate.
        retried = uuid.uuid4()
        with pytest.raises(Killed):
            async with conn.transaction():
                await _insert(conn, _entry(retried, chain, 3))
                raise Killed
        await _insert(conn, _entry(retried, chain, 3))
        refused = await truth.refused_audit_inserts(conn)
        entries = await truth.audit_entries(conn)
        # What the old check compared: equal whatever happened.
        assert (
            await conn.fetchval("SELECT count(*) - count(DISTINCT event_id) FROM audit.entries")
            == 0
        )
    assert refused == Counter({str(stored): 1, str(twice): 1})
    assert entries == Counter({str(stored): 1, str(retried): 1})


async def test_a_concurrent_duplicate_insert_waits_and_is_counted(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as first, pool.acquire() as second:
        await truth.install_counters(first, database_url)
        event, chain = uuid.uuid4(), str(uuid.uuid4())
        tx = first.transaction()
        await tx.start()
        await _insert(first, _entry(event, chain, 1))
        racing = asyncio.create_task(_insert(second, _entry(event, chain + "x", 1)))
        await asyncio.sleep(0.3)
        assert not racing.done()  # it waits for the first writer to finish
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await racing
        assert await truth.refused_audit_inserts(first) == Counter({str(event): 1})


async def test_a_deduplicated_delivery_is_counted(pool: asyncpg.Pool, database_url: str) -> None:
    async with pool.acquire() as conn:
        await truth.install_counters(conn, database_url)
        event = uuid.uuid4()
        for _ in range(2):  # what the consumer loop runs for each delivery
            await conn.execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                "audit",
                event,
            )
        with pytest.raises(Killed):  # a delivery rolled back with its effect: none
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)",
                    "sessions",
                    event,
                )
                raise Killed
        deliveries = await truth.consumer_deliveries(conn)
        rows = await truth.processed_rows(conn)
    assert deliveries == Counter({("audit", str(event)): 2})
    assert rows == Counter({("audit", str(event)): 1})
