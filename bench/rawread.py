"""The baseline of a read of the whole store: its commit-order SELECT from plain asyncpg.

Pages by (transaction id, position) below the oldest running transaction, as
``EventStore.read_all`` reads them, with both JSON columns (data and metadata) decoded
with orjson into plain dicts, as the store decodes both. The statement is the bench's
own, written out here. Used by ``python -m bench.eventstore`` (figure 3, on the
trigger-less copy ``raw_events``) and figure 6 (``bench/parts/pipeline.py``: the audit
rebuild's baseline, on ``events``).
"""

from __future__ import annotations

from typing import Literal

import asyncpg
import orjson

# The ORDER BY columns are qualified so the commit-order index serves them: an
# unqualified ``transaction_id`` would name the ``::text`` output column.
_SELECT_PAGE = """
SELECT position, transaction_id::text AS transaction_id, stream_id, stream_version, event_id,
       event_type, schema_version, data, metadata, recorded_at
FROM {table}
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY {table}.transaction_id, {table}.position
LIMIT $3
"""

Table = Literal["events", "raw_events"]
_PAGES: dict[Table, str] = {
    "events": _SELECT_PAGE.format(table="events"),
    "raw_events": _SELECT_PAGE.format(table="raw_events"),
}


async def read_everything(pool: asyncpg.Pool, table: Table, page: int) -> int:
    """Read every committed row of ``table`` in commit order, ``page`` rows a query;
    return how many were read."""
    transaction_id, position, count = "0", 0, 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_PAGES[table], transaction_id, position, page)
        if not rows:
            return count
        # Both JSON columns, as the store decodes both (data into the event, metadata).
        decoded = [(orjson.loads(r["data"]), orjson.loads(r["metadata"])) for r in rows]
        count += len(decoded)
        transaction_id, position = rows[-1]["transaction_id"], rows[-1]["position"]
