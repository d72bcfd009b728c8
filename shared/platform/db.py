"""PostgreSQL through asyncpg: pools with orjson for JSON columns, and the migration runner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
import orjson

__all__ = [
    "MIGRATIONS_DIR",
    "connect",
    "create_pool",
    "ensure_database",
    "ensure_service_role",
    "migrate",
]

log = logging.getLogger(__name__)

# deploy/migrations beside the package, in a checkout and in the wheel alike.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "migrations"
_MIGRATION_LOCK = 0x7477_6F66_615F_6D67  # "twofa_mg": one migrator at a time


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])  # binary jsonb is a version byte, then the text


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("jsonb", "json"):
        binary = name == "jsonb"
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=_jsonb_encode if binary else orjson.dumps,
            decoder=_jsonb_decode if binary else orjson.loads,
            format="binary" if binary else "text",
        )


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write JSON columns with orjson."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection set up like the pool's (for listeners and advisory locks)."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


def _migration_files(directory: Path) -> list[tuple[str, str]]:
    files = [(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]
    if not files:
        raise FileNotFoundError(f"no migrations in {directory}")
    return files


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every ``NNNN_name.sql`` not yet recorded, in order; return the ones applied.

    Idempotent and safe to run from several processes at once: an advisory lock makes
    them take turns, and each file runs in its own transaction with its record.
    """
    files = _migration_files(directory)
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.close()  # closing releases the advisory lock too
    return applied


async def ensure_service_role(admin_dsn: str, role: str, group: str) -> None:
    """Create login role ``role`` as a member of group role ``group`` (development and
    tests; the groups are the migrations' own, see 0009_service_roles.sql).

    A process then connects as a role that owns nothing and may do only what its group
    was granted, so the append-only rules and row-level policies hold for it whatever a
    superuser could do.
    """
    for name in (role, group):
        if not name.replace("_", "").isalnum():
            raise ValueError(f"invalid role name {name!r}")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            f"""DO $$ BEGIN
                    CREATE ROLE {role} LOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$"""
        )
        await conn.execute(f"GRANT {group} TO {role}")
    finally:
        await conn.close()


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_dsn`` unless it exists."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            quoted = name.replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{quoted}"')
    finally:
        await conn.close()
