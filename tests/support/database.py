"""SQL the tests run themselves: the server admin's statements, the count of events."""

from __future__ import annotations

import asyncpg

from shared.app.deps import Deps


async def admin_sql(postgres_url: str, sql: str) -> None:
    """Run one statement as the server's admin (CREATE or DROP DATABASE)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def event_count(core: Deps) -> int:
    return int(await core.pool.fetchval("SELECT count(*) FROM events"))
