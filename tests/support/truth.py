"""What "nothing lost, nothing duplicated" is checked against: truth the relay never made.

The events that must reach Kafka are read with plain SQL from ``events``, filtered by the
type names of the published contract (the AsyncAPI document), not through the relay's
commit-safe read nor its mapping: if either skipped an event, the relay and the check
would skip it together. Duplicates are counted where they could really happen: Kafka
records per event id (at least once is allowed, and reported), deliveries a consumer
deduplicated, ``processed_events`` rows per (consumer, event), revocations per session,
and audit inserts per event id *before* the unique index refuses them (a trigger on
``audit.entries`` records each refused attempt through ``dblink``, in a transaction of
its own, so the refusal's rollback does not take the record with it).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg
import yaml

__all__ = [
    "INTERNAL",
    "RENAMED",
    "TALLY_HEADER",
    "Answer",
    "Ledger",
    "Tally",
    "Written",
    "audit_entries",
    "check_answers",
    "consumer_deliveries",
    "group_by",
    "install_counters",
    "problems",
    "processed_rows",
    "public_types",
    "published_domain_types",
    "refused_audit_inserts",
    "revoked_twice",
    "written_events",
]

ASYNCAPI = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "asyncapi.yaml"
CHANNEL = "twofa.events.v1"

# The two facts about domain types the AsyncAPI document cannot give: the one stored
# under another public name, and the ones never published. tests/reliability/test_truth.py
# holds them to the contract's declaration (shared/messaging/contract.py).
RENAMED = {"twofa.locked": "account.locked"}
INTERNAL = frozenset({"username.claimed", "session.refreshed"})


@functools.cache
def public_types() -> frozenset[str]:
    """The message names the AsyncAPI document lists on the events channel."""
    document = cast(dict[str, Any], yaml.safe_load(ASYNCAPI.read_text()))
    return frozenset(document["channels"][CHANNEL]["messages"])


def published_domain_types(domain_types: Iterable[str]) -> frozenset[str]:
    """The domain types whose public name the AsyncAPI document lists."""
    return frozenset(t for t in domain_types if RENAMED.get(t, t) in public_types())


@dataclass(frozen=True, slots=True)
class Written:
    """One stored event that must reach Kafka, as the ``events`` table has it."""

    event_id: str
    type: str
    correlation_id: str | None
    session_id: str | None  # for session.revoked: the session it ends


async def written_events(conn: asyncpg.Connection, domain_types: Iterable[str]) -> list[Written]:
    """Every stored event of a published type, in plain SQL; a stored type that is neither
    published nor internal fails here rather than going unchecked."""
    published = sorted(published_domain_types(domain_types))
    unknown = await conn.fetch(
        "SELECT DISTINCT event_type FROM events WHERE NOT event_type = ANY($1::text[])",
        [*published, *INTERNAL],
    )
    if unknown:
        raise AssertionError(f"stored types the contract does not name: {unknown}")
    rows = await conn.fetch(
        """SELECT event_id::text AS id, event_type, metadata->>'correlation_id' AS corr,
                  data->>'session_id' AS session
           FROM events WHERE event_type = ANY($1::text[]) ORDER BY position""",
        published,
    )
    return [
        Written(
            row["id"],
            row["event_type"],
            row["corr"],
            row["session"] if row["event_type"] == "session.revoked" else None,
        )
        for row in rows
    ]


# -- counters in the database: refused audit inserts, deliveries consumers deduplicated ----

_COUNTERS = """
CREATE EXTENSION IF NOT EXISTS dblink;

CREATE TABLE test_audit_refused (
    event_id uuid NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE test_consumer_deliveries (
    consumer text NOT NULL,
    event_id uuid NOT NULL
);

-- Before the unique index can refuse it: an insert of an event id the log holds already
-- (committed, or earlier in the same transaction) is recorded through dblink, so the
-- rollback the refusal causes keeps the record. The advisory lock makes a concurrent
-- writer of the same id wait until the first one has committed or rolled back.
CREATE FUNCTION test_audit_attempt() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.event_id::text, 8413));
    IF EXISTS (SELECT 1 FROM audit.entries WHERE event_id = NEW.event_id) THEN
        PERFORM dblink_exec(__CONNINFO__, format(
            'INSERT INTO test_audit_refused (event_id) VALUES (%L)', NEW.event_id));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER test_audit_attempts BEFORE INSERT ON audit.entries
    FOR EACH ROW EXECUTE FUNCTION test_audit_attempt();

-- A BEFORE trigger fires for a row ON CONFLICT DO NOTHING then drops: the committed
-- deliveries per (consumer, event), deduplicated ones included (rolled back ones not).
CREATE FUNCTION test_consumer_delivery() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO test_consumer_deliveries (consumer, event_id)
        VALUES (NEW.consumer, NEW.event_id);
    RETURN NEW;
END
$$;
CREATE TRIGGER test_consumer_deliveries BEFORE INSERT ON processed_events
    FOR EACH ROW EXECUTE FUNCTION test_consumer_delivery();
"""


async def install_counters(conn: asyncpg.Connection, conninfo: str) -> None:
    """Install the counters, as a superuser; ``conninfo`` reaches this database as one."""
    literal = await conn.fetchval("SELECT quote_literal($1::text)", conninfo)
    await conn.execute(_COUNTERS.replace("__CONNINFO__", literal))


async def _counted(conn: asyncpg.Connection, query: str) -> Counter[Any]:
    return Counter({row["k"]: row["n"] for row in await conn.fetch(query)})


async def refused_audit_inserts(conn: asyncpg.Connection) -> Counter[str]:
    """Inserts per event id the audit log's unique index refused."""
    return await _counted(
        conn, "SELECT event_id::text AS k, count(*) AS n FROM test_audit_refused GROUP BY 1"
    )


async def audit_entries(conn: asyncpg.Connection) -> Counter[str]:
    """Committed audit entries per event id."""
    return await _counted(
        conn, "SELECT event_id::text AS k, count(*) AS n FROM audit.entries GROUP BY 1"
    )


async def processed_rows(conn: asyncpg.Connection) -> Counter[tuple[str, str]]:
    """``processed_events`` rows per (consumer, event id)."""
    return await _counted(
        conn,
        "SELECT (consumer, event_id::text) AS k, count(*) AS n FROM processed_events GROUP BY 1",
    )


async def consumer_deliveries(conn: asyncpg.Connection) -> Counter[tuple[str, str]]:
    """Committed deliveries per (consumer, event id), deduplicated ones included."""
    return await _counted(
        conn,
        "SELECT (consumer, event_id::text) AS k, count(*) AS n"
        " FROM test_consumer_deliveries GROUP BY 1",
    )


# -- the checks, on what was read above (pure, so a test can feed them a wrong world) -----


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer: the request's correlation id and the events its operation writes."""

    correlation_id: str
    what: str
    types: frozenset[str]


def check_answers(
    answers: Iterable[Answer], written: Sequence[Written]
) -> tuple[list[str], set[str], int]:
    """Each answer's events, once each by (correlation id, type), and nothing else.

    Returns the problems, the event ids written beyond the one expected (duplicates) and
    how many promised events are missing (lost before they were stored).
    """
    by_request: dict[str, dict[str, list[str]]] = {}
    for event in written:
        if event.correlation_id is not None:
            by_request.setdefault(event.correlation_id, {}).setdefault(event.type, []).append(
                event.event_id
            )
    problems: list[str] = []
    surplus: set[str] = set()
    missing = 0
    for answer in answers:
        left = by_request.get(answer.correlation_id, {})
        for kind in sorted(answer.types):
            ids = left.get(kind, [])
            if not ids:
                missing += 1
                problems.append(f"{answer.what} {answer.correlation_id}: no {kind} stored")
            elif len(ids) > 1:
                surplus.update(ids[1:])
                problems.append(f"{answer.what} {answer.correlation_id}: {kind} x{len(ids)}")
        for kind in sorted(set(left) - answer.types):
            problems.append(f"{answer.what} {answer.correlation_id}: unexpected {kind}")
    return problems, surplus, missing


@dataclass
class Tally:
    """One row of the report: a group of stored events and what became of them."""

    written: int = 0
    on_kafka: int = 0  # records
    redelivered: int = 0  # records beyond one per event id
    deduplicated: int = 0  # deliveries a consumer recognised and skipped
    effects: int = 0  # processed_events rows
    revoked: int = 0  # session.revoked events
    audited: int = 0  # committed audit entries
    refused: int = 0  # audit inserts the unique index refused
    lost: int = 0
    duplicated: int = 0

    def row(self) -> tuple[int, ...]:
        return (
            self.written,
            self.on_kafka,
            self.redelivered,
            self.deduplicated,
            self.effects,
            self.revoked,
            self.audited,
            self.refused,
            self.lost,
            self.duplicated,
        )


TALLY_HEADER = (
    "written",
    "on Kafka",
    "redelivered",
    "deduped by consumers",
    "effects",
    "sessions revoked",
    "audit entries",
    "audit inserts refused",
    "lost",
    "duplicated",
)


@dataclass
class Ledger:
    """Everything read after the run, by event id, and the verdict on each event."""

    consumers: tuple[str, ...]
    kafka: Counter[str]  # records per event id on the topic
    deliveries: Counter[tuple[str, str]]  # committed deliveries per (consumer, event id)
    processed: Counter[tuple[str, str]]  # processed_events rows per (consumer, event id)
    audited: Counter[str]  # committed entries per event id
    refused: Counter[str]  # refused audit inserts per event id

    def lost(self, event: Written) -> list[str]:
        """Where ``event`` is missing: on Kafka, in a consumer's effects, in the audit log."""
        where = ["Kafka"] if not self.kafka[event.event_id] else []
        where += [c for c in self.consumers if not self.processed[(c, event.event_id)]]
        return where + (["audit log"] if not self.audited[event.event_id] else [])

    def duplicated(self, event: Written) -> list[str]:
        """Where ``event`` took effect more than once (Kafka redelivery is allowed)."""
        where = [c for c in self.consumers if self.processed[(c, event.event_id)] > 1]
        if self.audited[event.event_id] > 1:
            where.append("audit log")
        if self.refused[event.event_id]:
            where.append("audit inserts refused")
        return where

    def tally(self, events: Iterable[Written], surplus: set[str], missing: int = 0) -> Tally:
        """The figures of ``events``; ``surplus`` events are duplicates written to the store,
        ``missing`` the promised events never stored. Each event counts once."""
        tally = Tally(lost=missing)
        for event in events:
            key = event.event_id
            tally.written += 1
            tally.on_kafka += self.kafka[key]
            tally.redelivered += max(0, self.kafka[key] - 1)
            tally.deduplicated += sum(max(0, self.deliveries[(c, key)] - 1) for c in self.consumers)
            tally.effects += sum(self.processed[(c, key)] for c in self.consumers)
            tally.revoked += event.type == "session.revoked"
            tally.audited += self.audited[key]
            tally.refused += self.refused[key]
            tally.lost += bool(self.lost(event))
            tally.duplicated += bool(self.duplicated(event)) or key in surplus
        return tally


def revoked_twice(written: Sequence[Written]) -> set[str]:
    """The session.revoked events beyond the first of their session."""
    seen: set[str] = set()
    again: set[str] = set()
    for event in written:
        if event.session_id is not None:
            if event.session_id in seen:
                again.add(event.event_id)
            seen.add(event.session_id)
    return again


def problems(ledger: Ledger, written: Sequence[Written], limit: int = 20) -> list[str]:
    """The first ``limit`` events lost or duplicated somewhere, said in words."""
    said: list[str] = []
    for event in written:
        if lost := ledger.lost(event):
            said.append(f"{event.type} {event.event_id} missing from {', '.join(lost)}")
        if twice := ledger.duplicated(event):
            said.append(f"{event.type} {event.event_id} more than once in {', '.join(twice)}")
    return said[:limit]


def group_by(
    written: Iterable[Written], key: Mapping[str, str], other: str
) -> dict[str, list[Written]]:
    """``written`` by the group their correlation id belongs to (``other`` if none)."""
    groups: dict[str, list[Written]] = {}
    for event in written:
        groups.setdefault(key.get(event.correlation_id or "", other), []).append(event)
    return groups
