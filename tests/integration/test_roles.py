"""Least privilege in the database: as each process's role, every write it must not make
is refused, and every write it makes succeeds (migration 0009, README "Database roles").

One migrated database for the whole table, with a login per group role made here and a
row of each table to aim at; each case runs in a transaction that is rolled back, so the
cases cannot disturb one another. "denied" is SQLSTATE 42501: a missing grant, or a row
that breaks a row-level security policy. "hidden" is an UPDATE aimed at rows the policy
does not show to the role: it changes nothing (0 rows), and the test checks they remain.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.support.database import admin_sql
from tests.support.forbidden import EVERYONE_DENIED, GROUPS, ROLE_CASES, Outcome
from tests.support.servers import with_database

pytestmark = pytest.mark.integration


# Rows every case can aim at, written by the owner.
SEED = """
INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)
    VALUES ('account-seed', 1, gen_random_uuid(), 't', '{}', '{}');
INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state, key_id, mac) VALUES
    ('account-seed', 1, 'account', '{"seed": true}', 'k', '\\x00'),
    ('twofactor-seed', 1, 'twofactor', '{"seed": true}', 'k', '\\x00');
INSERT INTO relay_checkpoints (name, transaction_id, position) VALUES ('seed', '1', 1);
INSERT INTO processed_events (consumer, event_id) VALUES
    ('twofa.auth-sessions', gen_random_uuid()), ('twofa.enrolment-labels', gen_random_uuid()),
    ('twofa.audit', gen_random_uuid());
INSERT INTO enrolment_labels (account_id, email, position) VALUES ('seed', 'a@example.org', 1);
INSERT INTO login_throttle (name_key, failures, last_failure_at) VALUES ('\\x00', 1, now());
INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source, occurred_at,
    store_position, dataschema, content, prev_hash, hash)
    VALUES (gen_random_uuid(), 'seed', 1, 't', 's', now(), 1, 'd', '{}', '\\x00', '\\x00');
"""


CASES = [(group, sql, outcome) for group, cases in ROLE_CASES.items() for sql, outcome in cases] + [
    (group, sql, "denied") for group in GROUPS for sql in EVERYONE_DENIED
]


@dataclass(frozen=True)
class Logins:
    """The shared database and, per group role, the URL of a login in it."""

    owner_url: str
    urls: dict[str, str]


@pytest.fixture(scope="module")
def logins(postgres_url: str, template_database: str) -> Iterator[Logins]:
    name = f"twofa_roles_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    members = {group: f"t{uuid.uuid4().hex[:10]}_{group}" for group in GROUPS}

    async def setup() -> None:
        await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        conn = await asyncpg.connect(with_database(postgres_url, name))
        try:
            await conn.execute(SEED)
            for group, login in members.items():
                await conn.execute(
                    f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE {group}"
                )
        finally:
            await conn.close()

    async def teardown() -> None:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for login in members.values():
            await admin_sql(postgres_url, f"DROP ROLE IF EXISTS {login}")

    asyncio.run(setup())
    try:
        yield Logins(
            with_database(postgres_url, name),
            {g: with_database(postgres_url, name, login, password) for g, login in members.items()},
        )
    finally:
        asyncio.run(teardown())


def affected(status: str) -> int:
    """Rows a command status reports: ``INSERT 0 1`` → 1, ``UPDATE 0`` → 0."""
    return int(status.rsplit(" ", 1)[-1])


@pytest.mark.parametrize(("group", "sql", "outcome"), CASES)
async def test_each_role_may_make_only_its_own_writes(
    logins: Logins, group: str, sql: str, outcome: Outcome
) -> None:
    conn = await asyncpg.connect(logins.urls[group])
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            if outcome == "denied":
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
            else:
                status = await conn.execute(sql)
                if outcome == "hidden":
                    assert affected(status) == 0, status
                elif sql.startswith(("INSERT", "UPDATE")):
                    assert affected(status) >= 1, status
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    if outcome == "hidden":  # the row it aimed at is as the owner wrote it
        owner = await asyncpg.connect(logins.owner_url)
        try:
            state = await owner.fetchval(
                "SELECT convert_from(state, 'UTF8') FROM snapshots WHERE stream_id = 'account-seed'"
            )
        finally:
            await owner.close()
        assert state == '{"seed": true}'


async def test_no_service_role_bypasses_row_level_security(logins: Logins) -> None:
    owner = await asyncpg.connect(logins.owner_url)
    try:
        rows = await owner.fetch(
            "SELECT rolname, rolbypassrls, rolsuper, rolcreaterole FROM pg_roles"
            " WHERE rolname = ANY($1::text[])",
            list(GROUPS),
        )
        protected = await owner.fetch(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relname = ANY($1::text[])",
            ["events", "snapshots", "processed_events"],
        )
    finally:
        await owner.close()
    assert len(rows) == len(GROUPS)
    assert not [
        r["rolname"] for r in rows if r["rolbypassrls"] or r["rolsuper"] or r["rolcreaterole"]
    ]
    assert sorted(r["relname"] for r in protected) == ["events", "processed_events", "snapshots"]
