"""The writes each twofa database role may and may not make (migration 0009), as SQL.

``ROLE_CASES`` lists per group role what it must be able to do ("ok"), what must be
refused with SQLSTATE 42501 ("denied": a missing grant or a row-level policy) and what
a policy hides from it ("hidden": an UPDATE that finds no row); ``EVERYONE_DENIED`` is
refused to every service role. ``tests/integration/test_roles.py`` runs them all on a
seeded database; ``tests/reliability/test_attacks.py`` runs the refused ones with the
real logins of a running stack.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["EVERYONE_DENIED", "GROUPS", "ROLE_CASES", "Outcome", "denied_to"]

GROUPS = ("twofa_auth", "twofa_enrolment", "twofa_audit", "twofa_relay", "twofa_app")
Outcome = Literal["ok", "denied", "hidden"]


# The statements are built from this module's own constants only.
def event(stream: str) -> str:
    return (
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)"  # noqa: S608
        f" VALUES ('{stream}' || gen_random_uuid(), 1, gen_random_uuid(), 't', '{{}}', '{{}}')"
    )


def snapshot(stream: str, kind: str) -> str:
    return (
        "INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state, key_id, mac)"  # noqa: S608
        f" VALUES ('{stream}' || gen_random_uuid(), 1, '{kind}', '{{}}', 'k', '\\x00')"
    )


def upsert_snapshot(stream: str, kind: str) -> str:
    """The store's own snapshot write, aimed at the seeded row of ``stream``."""
    return (
        "INSERT INTO snapshots (stream_id, stream_version, snapshot_type, state, key_id, mac)"  # noqa: S608
        f" VALUES ('{stream}', 2, '{kind}', '{{\"enabled\": false}}', 'k', '\\x00')"
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
    " store_position, dataschema, content, prev_hash, hash) VALUES (gen_random_uuid(), 'forged',"
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
    "UPDATE audit.entries SET content = '{}'",
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


def denied_to(group: str) -> list[str]:
    """Every statement refused to ``group``."""
    own = [sql for sql, outcome in ROLE_CASES[group] if outcome == "denied"]
    return own + EVERYONE_DENIED
