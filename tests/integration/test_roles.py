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
from typing import Literal

import asyncpg
import pytest

from tests.support.database import admin_sql
from tests.support.servers import with_database

pytestmark = pytest.mark.integration

GROUPS = ("twofa_auth", "twofa_enrolment", "twofa_audit", "twofa_relay", "twofa_app")
Outcome = Literal["ok", "denied", "hidden"]

# Rows every case can aim at, written by the owner.
SEED = """
INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)
    VALUES ('account-seed', 1, gen_random_uuid(), 't', '{}', '{}');
INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state) VALUES
    ('account-seed', 1, 'account', '{"seed": true}'),
    ('twofactor-seed', 1, 'twofactor', '{"seed": true}');
INSERT INTO relay_checkpoints (name, transaction_id, position) VALUES ('seed', '1', 1);
INSERT INTO processed_events (consumer, event_id) VALUES
    ('twofa.auth-sessions', gen_random_uuid()), ('twofa.enrolment-labels', gen_random_uuid()),
    ('twofa.audit', gen_random_uuid());
INSERT INTO enrolment_labels (account_id, email, position) VALUES ('seed', 'a@example.org', 1);
INSERT INTO login_throttle (name_key, failures, last_failure_at) VALUES ('\\x00', 1, now());
INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source, occurred_at,
    store_position, dataschema, data, prev_hash, hash)
    VALUES (gen_random_uuid(), 'seed', 1, 't', 's', now(), 1, 'd', '{}', '\\x00', '\\x00');
"""


# The statements are built from this module's own constants only.
def event(stream: str) -> str:
    return (
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)"  # noqa: S608
        f" VALUES ('{stream}' || gen_random_uuid(), 1, gen_random_uuid(), 't', '{{}}', '{{}}')"
    )


def snapshot(stream: str, kind: str) -> str:
    return (
        "INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state)"  # noqa: S608
        f" VALUES ('{stream}' || gen_random_uuid(), 1, '{kind}', '{{}}')"
    )


def upsert_snapshot(stream: str, kind: str) -> str:
    """The store's own snapshot write, aimed at the seeded row of ``stream``."""
    return (
        "INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state)"  # noqa: S608
        f" VALUES ('{stream}', 2, '{kind}', '{{\"enabled\": false}}')"
        " ON CONFLICT (stream_id, snapshot_type) DO UPDATE SET state = excluded.state,"
        " stream_version = excluded.stream_version"
    )


def processed(consumer: str) -> str:
    return (
        "INSERT INTO processed_events (consumer, event_id)"  # noqa: S608
        f" VALUES ('{consumer}', gen_random_uuid()) ON CONFLICT DO NOTHING RETURNING true"
    )


CHECKPOINT = (
    "INSERT INTO relay_checkpoints (name, transaction_id, position, min_ends)"
    " VALUES ('seed', '2', 2, '{}') ON CONFLICT (name) DO UPDATE SET position = 2"
)
NEW_CHECKPOINT = (
    "INSERT INTO relay_checkpoints (name, transaction_id, position) VALUES ('x', '1', 1)"
)
LABEL = (
    "INSERT INTO enrolment_labels (account_id, email, position) VALUES ('seed', 'b@example.org', 2)"
    " ON CONFLICT (account_id) DO UPDATE SET email = excluded.email"
)
THROTTLE = (
    "INSERT INTO login_throttle (name_key, failures, last_failure_at) VALUES ('\\x00', 1, now())"
    " ON CONFLICT (name_key) DO UPDATE SET failures = login_throttle.failures + 1"
)
ENTRY = (
    "INSERT INTO audit.entries (event_id, chain, chain_seq, event_type, source, occurred_at,"
    " store_position, dataschema, data, prev_hash, hash) VALUES (gen_random_uuid(), 'forged',"
    " 1, 't', 's', now(), 1, 'd', '{}', '\\x00', '\\x00')"
)

# What no service role may do, whichever it is: change the truth, the checkpoints of the
# relay's feed (for all but the relay), the audit log (for all but audit), and the schema.
EVERYONE_DENIED = [
    "UPDATE events SET data = '{}'",
    "DELETE FROM events",
    "TRUNCATE events",
    "DELETE FROM snapshots",
    "TRUNCATE snapshots",
    "DELETE FROM processed_events",
    "UPDATE processed_events SET consumer = 'x'",
    "DELETE FROM relay_checkpoints",
    "UPDATE audit.entries SET data = '{}'",
    "DELETE FROM audit.entries",
    "TRUNCATE audit.entries",
    "INSERT INTO schema_migrations (name) VALUES ('9999_forged')",
    "DELETE FROM schema_migrations",
    "CREATE TABLE forged (x int)",
    "CREATE SCHEMA forged",
    "DROP TABLE snapshots",
    "ALTER TABLE snapshots DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE events DISABLE TRIGGER USER",
    "DROP POLICY snapshots_auth ON snapshots",
    "CREATE POLICY forged ON snapshots USING (true)",
    "ALTER TABLE audit.entries DISABLE TRIGGER USER",
    "ALTER ROLE CURRENT_USER BYPASSRLS",
    "GRANT twofa_relay TO CURRENT_USER",
]

ROLE_CASES: dict[str, list[tuple[str, Outcome]]] = {
    "twofa_auth": [
        (event("account-"), "ok"),
        (event("username-"), "ok"),
        (event("twofactor-"), "ok"),
        ("SELECT count(*) FROM events", "ok"),
        (snapshot("account-", "account"), "ok"),
        (snapshot("twofactor-", "twofactor"), "ok"),
        (upsert_snapshot("account-seed", "account"), "ok"),
        (upsert_snapshot("twofactor-seed", "twofactor"), "ok"),
        (processed("twofa.auth-sessions"), "ok"),
        (THROTTLE, "ok"),
        ("DELETE FROM login_throttle WHERE last_failure_at < now()", "ok"),
        (event("audit-"), "denied"),
        (event("notify-"), "denied"),
        (snapshot("account-", "twofactor"), "denied"),
        (snapshot("username-", "account"), "denied"),
        (snapshot("notify-", "notify"), "denied"),
        (processed("twofa.enrolment-labels"), "denied"),
        (processed("twofa.audit"), "denied"),
        (CHECKPOINT, "denied"),
        (NEW_CHECKPOINT, "denied"),
        ("UPDATE relay_checkpoints SET position = 0", "denied"),
        (LABEL, "denied"),
        ("UPDATE enrolment_labels SET email = 'x'", "denied"),
        ("DELETE FROM enrolment_labels", "denied"),
        (ENTRY, "denied"),
        ("SELECT count(*) FROM audit.entries", "denied"),
    ],
    "twofa_enrolment": [
        (event("twofactor-"), "ok"),
        ("SELECT count(*) FROM events", "ok"),
        (snapshot("twofactor-", "twofactor"), "ok"),
        (upsert_snapshot("twofactor-seed", "twofactor"), "ok"),
        (processed("twofa.enrolment-labels"), "ok"),
        (LABEL, "ok"),
        ("SELECT count(*) FROM enrolment_labels", "ok"),
        (event("account-"), "denied"),
        (event("username-"), "denied"),
        (snapshot("account-", "account"), "denied"),
        (snapshot("twofactor-", "account"), "denied"),
        (upsert_snapshot("account-seed", "account"), "denied"),
        ("UPDATE snapshots SET state = '{}' WHERE stream_id = 'account-seed'", "hidden"),
        (processed("twofa.auth-sessions"), "denied"),
        (processed("twofa.audit"), "denied"),
        (CHECKPOINT, "denied"),
        (NEW_CHECKPOINT, "denied"),
        (THROTTLE, "denied"),
        ("DELETE FROM login_throttle", "denied"),
        ("DELETE FROM enrolment_labels", "denied"),
        (ENTRY, "denied"),
        ("SELECT count(*) FROM audit.entries", "denied"),
    ],
    "twofa_audit": [
        ("SELECT count(*) FROM events", "ok"),
        (ENTRY, "ok"),
        ("SELECT count(*) FROM audit.entries", "ok"),
        (processed("twofa.audit"), "ok"),
        (event("account-"), "denied"),
        (event("twofactor-"), "denied"),
        (snapshot("twofactor-", "twofactor"), "denied"),
        (upsert_snapshot("twofactor-seed", "twofactor"), "denied"),
        ("UPDATE snapshots SET state = '{}'", "denied"),
        ("SELECT count(*) FROM snapshots", "denied"),
        (processed("twofa.auth-sessions"), "denied"),
        (processed("twofa.enrolment-labels"), "denied"),
        (CHECKPOINT, "denied"),
        (NEW_CHECKPOINT, "denied"),
        (LABEL, "denied"),
        (THROTTLE, "denied"),
        ("DELETE FROM login_throttle", "denied"),
    ],
    "twofa_relay": [
        ("SELECT count(*) FROM events", "ok"),
        (CHECKPOINT, "ok"),
        (NEW_CHECKPOINT, "ok"),
        ("SELECT count(*) FROM relay_checkpoints", "ok"),
        (event("account-"), "denied"),
        (event("twofactor-"), "denied"),
        (snapshot("twofactor-", "twofactor"), "denied"),
        (upsert_snapshot("account-seed", "account"), "denied"),
        ("UPDATE snapshots SET state = '{}'", "denied"),
        (processed("twofa.audit"), "denied"),
        (processed("twofa.auth-sessions"), "denied"),
        (LABEL, "denied"),
        (THROTTLE, "denied"),
        ("DELETE FROM login_throttle", "denied"),
        (ENTRY, "denied"),
        ("SELECT count(*) FROM audit.entries", "denied"),
    ],
    # The one group of before: after 0009 it holds nothing at all.
    "twofa_app": [
        ("SELECT count(*) FROM events", "denied"),
        (event("account-"), "denied"),
        (snapshot("twofactor-", "twofactor"), "denied"),
        (upsert_snapshot("twofactor-seed", "twofactor"), "denied"),
        (processed("twofa.audit"), "denied"),
        (CHECKPOINT, "denied"),
        (LABEL, "denied"),
        (THROTTLE, "denied"),
        (ENTRY, "denied"),
    ],
}

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
                "SELECT state::text FROM snapshots WHERE stream_id = 'account-seed'"
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
