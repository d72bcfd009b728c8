"""The audit log in PostgreSQL: SQL only (the chain's rules are ``domain/chain.py``)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.audit.domain.chain import Entry, Stored

__all__ = [
    "Filters",
    "current_end",
    "decode_cursor",
    "encode_cursor",
    "head",
    "holds",
    "insert",
    "lock_chain",
    "page",
    "row_to_json",
    "stream_after",
    "summary",
    "walk",
]

_COLUMNS = """id, event_id, chain, chain_seq, event_type, source, actor, correlation_id,
    causation_id, occurred_at, store_position, dataschema, data, content, kafka_partition,
    kafka_offset, prev_hash, hash, recorded_at"""


async def lock_chain(conn: asyncpg.Connection, chain: str) -> None:
    """Writers to one chain (a rebalance, a rebuild) take turns, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", chain)


async def holds(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    """Is the event in the log already?"""
    return bool(await conn.fetchval("SELECT 1 FROM audit.entries WHERE event_id = $1", event_id))


async def head(conn: asyncpg.Connection, chain: str) -> tuple[int, bytes] | None:
    """The last entry of ``chain``: its ``chain_seq`` and hash."""
    row = await conn.fetchrow(
        "SELECT chain_seq, hash FROM audit.entries WHERE chain = $1"
        " ORDER BY chain_seq DESC LIMIT 1",
        chain,
    )
    return None if row is None else (row["chain_seq"], bytes(row["hash"]))


async def insert(
    conn: asyncpg.Connection,
    entry: Entry,
    content: bytes,
    prev_hash: bytes,
    entry_hash: bytes,
    *,
    partition: int | None,
    offset: int | None,
) -> None:
    """Store ``entry`` as ``content``, its canonical bytes; its data has no other copy."""
    await conn.execute(
        """INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source, actor,
               correlation_id, causation_id, occurred_at, store_position, dataschema, content,
               kafka_partition, kafka_offset, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
        entry.event_id,
        entry.chain,
        entry.chain_seq,
        entry.event_type,
        entry.source,
        entry.actor,
        entry.correlation_id,
        entry.causation_id,
        entry.occurred_at,
        entry.store_position,
        entry.dataschema,
        content,
        partition,
        offset,
        prev_hash,
        entry_hash,
    )


@dataclass(frozen=True, slots=True)
class Filters:
    account: str | None = None
    event_type: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, after_id: int, first_param: int = 1) -> tuple[str, list[Any]]:
        """A WHERE clause of fixed fragments, values as parameters only."""
        clauses: list[str] = [f"id > ${first_param}"]
        args: list[Any] = [after_id]
        for column, op, value in (
            ("chain", "=", self.account),
            ("event_type", "=", self.event_type),
            ("actor", "=", self.actor),
            ("occurred_at", ">=", self.since),
            ("occurred_at", "<", self.until),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} {op} ${first_param + len(args) - 1}")
        return " AND ".join(clauses), args


def row_to_json(row: asyncpg.Record) -> dict[str, Any]:
    """The API form of an entry (hashes in hex): what its stored content says, or for an
    entry recorded before content was stored (migration 0007), what its columns say."""
    content = row["content"]
    said = _stored(row).entry.document() if content is None else orjson.loads(content)
    return {
        "id": row["id"],
        "event_id": said["event_id"],
        "account_id": said["chain"],
        "chain_seq": said["chain_seq"],
        "type": said["event_type"],
        "source": said["source"],
        "actor": said["actor"],
        "correlation_id": said["correlation_id"],
        "causation_id": said["causation_id"],
        "occurred_at": said["occurred_at"],
        "store_position": said["store_position"],
        "dataschema": said["dataschema"],
        "data": said["data"],
        "kafka_partition": row["kafka_partition"],
        "kafka_offset": row["kafka_offset"],
        "prev_hash": bytes(row["prev_hash"]).hex(),
        "hash": bytes(row["hash"]).hex(),
        "recorded_at": row["recorded_at"].isoformat(),
    }


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    prefix, _, number = text.partition(":")
    if prefix != "a1" or not number.isdecimal() or len(number) > 18:
        return None
    return int(number)


async def page(
    pool: asyncpg.Pool, filters: Filters, after_id: int, limit: int
) -> list[asyncpg.Record]:
    where, args = filters.where(after_id)
    sql = f"SELECT {_COLUMNS} FROM audit.entries WHERE {where} ORDER BY id LIMIT {int(limit)}"  # noqa: S608 — fixed fragments, values are parameters
    rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
    return rows


async def stream_after(
    pool: asyncpg.Pool, filters: Filters, after_id: int, batch: int = 1000
) -> AsyncIterator[asyncpg.Record]:
    """Every matching entry after ``after_id`` in id order, fetched in batches."""
    while rows := await page(pool, filters, after_id, batch):
        for row in rows:
            yield row
        after_id = rows[-1]["id"]


async def current_end(pool: asyncpg.Pool) -> int:
    """The id of the newest entry (0 while the log is empty)."""
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM audit.entries"))


async def walk(pool: asyncpg.Pool) -> AsyncIterator[Stored]:
    """Every entry in (chain, chain_seq) order, from one consistent snapshot of the log."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        ordered = f"SELECT {_COLUMNS} FROM audit.entries ORDER BY chain, chain_seq"  # noqa: S608 — constant
        async for row in conn.cursor(ordered, prefetch=2000):
            yield _stored(row)


def _stored(row: asyncpg.Record) -> Stored:
    content = row["content"]
    entry = Entry(
        event_id=row["event_id"],
        chain=row["chain"],
        chain_seq=row["chain_seq"],
        event_type=row["event_type"],
        source=row["source"],
        actor=row["actor"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        occurred_at=row["occurred_at"],
        store_position=row["store_position"],
        dataschema=row["dataschema"],
        data=row["data"] if content is None else {},  # then the content alone holds it
    )
    stored_content = None if content is None else bytes(content)
    return Stored(row["id"], entry, bytes(row["prev_hash"]), bytes(row["hash"]), stored_content)


async def summary(
    pool: asyncpg.Pool, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """What a reviewer opens first: counts by type, and the accounts with most trouble."""
    filters = Filters(since=since, until=until)
    where, args = filters.where(0)
    counts = await pool.fetch(
        f"SELECT event_type, count(*) AS n FROM audit.entries WHERE {where}"  # noqa: S608 — fixed fragments
        " GROUP BY event_type ORDER BY n DESC, event_type",
        *args,
    )
    top: dict[str, list[dict[str, Any]]] = {}
    for key, kind in (
        ("otp_failures", "twofa.otp_failed"),
        ("recovery_code_uses", "twofa.recovery_code_used"),
        ("lockouts", "account.locked"),
    ):
        where_k, args_k = Filters(event_type=kind, since=since, until=until).where(0)
        rows = await pool.fetch(
            f"SELECT chain, count(*) AS n FROM audit.entries WHERE {where_k}"  # noqa: S608 — fixed fragments
            " GROUP BY chain ORDER BY n DESC, chain LIMIT 10",
            *args_k,
        )
        top[key] = [{"account_id": r["chain"], "count": r["n"]} for r in rows]
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "counts": {r["event_type"]: r["n"] for r in counts},
        "top_accounts": top,
    }
