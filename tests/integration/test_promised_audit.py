"""What the README promises of the audit log, shown through the real service and command.

A cut chain tail changes ``verify``'s root; each entry's hash follows the documented
rule, recomputed here with hashlib alone; CSV cells that start like formulas are
defused; the summary counts lockouts; ``twofa audit rebuild`` restores a deleted log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from services.audit.main import create_app
from services.auth.main import create_app as auth_app
from shared.domain import events as ev
from shared.eventstore.envelope import EventMetadata, NewEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from tests.support.apps import client_for
from tests.support.audit import CHAIN_ROWS, Audit, activity, issue, log_holds_the_store
from tests.support.cli import twofa_async
from tests.support.clock import Clock
from tests.support.relay import relaying
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for, with_kafka, without_broker

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def audit(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str
) -> AsyncIterator[Audit]:
    """One audit instance ingesting what the relay publishes from the store."""
    settings = settings_for(database_url, **with_kafka(kafka_bootstrap, topic))
    clock = Clock()
    store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
    async with relaying(database_url, store, kafka_bootstrap, topic):
        app = create_app(settings, clock=clock)
        async with client_for(app) as client:
            yield Audit(
                client, client, (app, app), store, settings, clock, issue(settings, clock), topic
            )


async def verified(audit: Audit) -> dict[str, Any]:
    answer = await audit.client.get("/v1/audit/verify", headers=audit.headers())
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def exported(audit: Audit) -> list[dict[str, Any]]:
    answer = await audit.client.get("/v1/audit/export", headers=audit.headers())
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line) for line in answer.text.splitlines()]


class Owner:
    """The schema owner, who may switch the log's append-only triggers off (an attacker
    with the database, or an operator's mistake)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def delete(self, where: str, *args: object) -> int:
        async with self.conn.transaction():
            await self.conn.execute("ALTER TABLE audit.entries DISABLE TRIGGER USER")
            status = await self.conn.execute(f"DELETE FROM audit.entries WHERE {where}", *args)  # noqa: S608 — the tests' own fragments
            await self.conn.execute("ALTER TABLE audit.entries ENABLE TRIGGER USER")
        return int(status.split()[-1])


@pytest.fixture
async def owner(database_url: str) -> AsyncIterator[Owner]:
    conn = await asyncpg.connect(database_url)
    try:
        yield Owner(conn)
    finally:
        await conn.close()


# The documented rule, written again here without the product's code: per account,
# hash = SHA-256(prev_hash || sorted-key compact JSON of the entry's content), the first
# linking to 32 zero bytes; the root is the SHA-256 of "account:head-hash-hex\n" lines,
# sorted.
GENESIS = bytes(32)


def content(item: dict[str, Any]) -> bytes:
    """The hashed content of an exported entry: all but its id, Kafka place and hashes."""
    occurred = datetime.fromisoformat(item["occurred_at"]).astimezone(UTC).isoformat()
    fields = {
        "event_id": item["event_id"],
        "chain": item["account_id"],
        "chain_seq": item["chain_seq"],
        "event_type": item["type"],
        "source": item["source"],
        "actor": item["actor"],
        "correlation_id": item["correlation_id"],
        "causation_id": item["causation_id"],
        "occurred_at": occurred,
        "store_position": item["store_position"],
        "dataschema": item["dataschema"],
        "data": item["data"],
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def recomputed(items: list[dict[str, Any]]) -> tuple[dict[str, str], str]:
    """Check every chain of ``items`` link by link; each chain's head hash, and the root."""
    heads: dict[str, str] = {}
    chains: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        chains.setdefault(item["account_id"], []).append(item)
    for account, chain in chains.items():
        prev = GENESIS
        for seq, item in enumerate(sorted(chain, key=lambda i: i["chain_seq"]), start=1):
            assert item["chain_seq"] == seq, item
            assert item["prev_hash"] == prev.hex(), item
            prev = hashlib.sha256(prev + content(item)).digest()
            assert item["hash"] == prev.hex(), item
        heads[account] = prev.hex()
    lines = "".join(f"{account}:{head}\n" for account, head in sorted(heads.items()))
    return heads, hashlib.sha256(lines.encode()).hexdigest()


async def varied_activity(audit: Audit) -> None:
    """Entries with every field filled in some of them, and text beyond ASCII."""
    await activity(audit.store, accounts=3, each=3)
    account = str(uuid.uuid4())
    cause = uuid.uuid4()
    meta = EventMetadata(correlation_id=uuid.uuid4(), causation_id=cause, actor="operator:cli")
    registered = ev.AccountRegistered(username="zoë", email="名前@例え.jp", password_hash="H")
    changed = ev.EmailChanged(email="zoë.o'neil+2fa@example.org", previous_email="名前@例え.jp")
    await audit.store.append(
        f"account-{account}", [NewEvent(registered, meta), NewEvent(changed, meta)], 0
    )


async def test_chain_hashes_match_an_independent_implementation(audit: Audit) -> None:
    await varied_activity(audit)
    total = await log_holds_the_store(audit.store)
    items = await exported(audit)
    assert len(items) == total
    assert any(i["causation_id"] for i in items) and any("ë" in str(i["data"]) for i in items)
    heads, root = recomputed(items)
    report = await verified(audit)
    assert report == {"ok": True, "entries": total, "chains": len(heads), "root": root}


async def test_cutting_a_chains_tail_keeps_it_valid_but_changes_the_root(
    audit: Audit, owner: Owner
) -> None:
    ids = await activity(audit.store, accounts=3, each=3)
    total = await log_holds_the_store(audit.store)
    before = await verified(audit)
    assert before["ok"] is True and before["entries"] == total and before["chains"] == 3
    victim = next(iter(ids))
    cut = await owner.delete(
        "chain = $1 AND chain_seq = (SELECT max(chain_seq) FROM audit.entries WHERE chain = $1)",
        victim,
    )
    assert cut == 1
    after = await verified(audit)
    # What is left is a valid chain, one entry shorter: only the root tells.
    _, root = recomputed(await exported(audit))
    assert after == {"ok": True, "entries": total - 1, "chains": 3, "root": root}
    assert after["root"] != before["root"]


FORMULA_STARTS = ['=HYPERLINK("https://evil.example")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


async def test_csv_export_defuses_cells_that_start_like_formulas(audit: Audit) -> None:
    actors = [*FORMULA_STARTS, "operator:a=b"]
    for actor in actors:
        registered = ev.AccountRegistered(username="u", email="u@x.org", password_hash="H")
        await audit.store.append(
            f"account-{uuid.uuid4()}", [NewEvent(registered, EventMetadata(actor=actor))], 0
        )
    await log_holds_the_store(audit.store)
    answer = await audit.client.get(
        "/v1/audit/export", params={"format": "csv"}, headers=audit.headers()
    )
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text, newline="")))
    assert sorted(r["actor"] for r in rows) == sorted(
        ["'" + a for a in FORMULA_STARTS] + ["operator:a=b"]
    )
    for row in rows:  # no other cell starts like a formula either
        assert all(not cell or cell[0] not in "=+-@\t\r" for cell in row.values()), row


async def test_summary_counts_lockouts_per_account(audit: Audit) -> None:
    auth_settings = without_broker(audit.settings)
    app = auth_app(auth_settings, clock=audit.clock)
    async with client_for(app) as auth:
        locks = {}
        for times in (2, 1):
            username = f"user-{uuid.uuid4().hex[:8]}"
            body = {"username": username, "email": "u@example.org", "password": PASSWORD}
            account_id = (await auth.post("/v1/accounts", json=body)).json()["account_id"]
            await enable_through_domain(app.state.deps, account_id, audit.clock())
            for _ in range(times):
                login = {"username": username, "password": PASSWORD}
                challenge = (await auth.post("/v1/login", json=login)).json()["mfa_token"]
                codes = [
                    await auth.post("/v1/login/mfa", json={"mfa_token": challenge, "otp": "000000"})
                    for _ in range(5)
                ]
                assert codes[-1].status_code == 423
                audit.clock.advance(hours=2)  # past the lock (15 min, then 30)
            locks[account_id] = times
    await log_holds_the_store(audit.store)
    fresh = issue(audit.settings, audit.clock)  # the fixture's token expired meanwhile
    summary = await audit.client.get("/v1/audit/summary", headers=audit.headers(fresh))
    assert summary.status_code == 200
    body = summary.json()
    assert body["counts"]["account.locked"] == 3
    assert body["counts"]["twofa.otp_failed"] == 15
    assert body["top_accounts"]["lockouts"] == [
        {"account_id": account, "count": n} for account, n in locks.items()
    ]
    assert body["top_accounts"]["otp_failures"] == [
        {"account_id": account, "count": 5 * n} for account, n in locks.items()
    ]


async def test_audit_rebuild_from_the_cli_restores_a_deleted_log(
    audit: Audit, owner: Owner, database_url: str
) -> None:
    await activity(audit.store, accounts=4, each=3)
    total = await log_holds_the_store(audit.store)
    ingested = [tuple(r) for r in await audit.store.pool.fetch(CHAIN_ROWS)]
    assert len(ingested) == total
    assert await owner.delete("true") == total
    assert (await verified(audit))["entries"] == 0

    out = await twofa_async(database_url, "audit", "rebuild")
    assert out == f"read {total} stored events; added {total} audit entries\n"
    assert [tuple(r) for r in await audit.store.pool.fetch(CHAIN_ROWS)] == ingested
    again = await twofa_async(database_url, "audit", "rebuild")
    assert again == f"read {total} stored events; added 0 audit entries\n"
    report = await verified(audit)
    assert report["ok"] is True and report["entries"] == total
