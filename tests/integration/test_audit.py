"""The audit service against real PostgreSQL and Kafka: ingest, chain, API, rebuild."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.audit.main import create_app
from services.audit.usecases import rebuild
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer
from tests.support.apps import client_for, is_problem, served
from tests.support.audit import CHAIN_ROWS, Audit, activity, issue, log_holds
from tests.support.clock import Clock
from tests.support.database import admin_sql
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.relay import relaying
from tests.support.servers import with_database
from tests.support.settings import settings_for, with_kafka, without_broker

pytestmark = pytest.mark.integration


@pytest.fixture
async def audit(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str
) -> AsyncIterator[Audit]:
    settings = settings_for(
        database_url,
        **with_kafka(kafka_bootstrap, topic),
    )
    clock = Clock()
    store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
    async with relaying(database_url, store, kafka_bootstrap, topic):
        apps = (create_app(settings, clock=clock), create_app(settings, clock=clock))
        async with client_for(apps[0]) as one, client_for(apps[1]) as two:
            yield Audit(one, two, apps, store, settings, clock, issue(settings, clock), topic)


async def all_entries(audit: Audit, **params: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        query = {**params, "limit": "7", **({"cursor": cursor} if cursor else {})}
        page = await audit.client.get("/v1/audit/events", params=query, headers=audit.headers())
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def ingested(audit: Audit, count: int) -> None:
    await log_holds(audit.store.pool, count)


async def test_every_event_appears_once_in_order_per_account_across_two_instances(
    audit: Audit,
) -> None:
    ids = await activity(audit.store)
    total = sum(len(v) for v in ids.values())
    await ingested(audit, total)
    items = await all_entries(audit)
    assert len(items) == total
    assert len({i["event_id"] for i in items}) == total
    for account, expected in ids.items():
        mine = [i for i in items if i["account_id"] == account]
        assert [i["event_id"] for i in mine] == expected  # id order is chain order here
        assert [i["chain_seq"] for i in mine] == list(range(1, len(expected) + 1))
    partitions = {i["kafka_partition"] for i in items}
    assert len(partitions) > 1  # the accounts spread over partitions
    owned = [audit.apps[0].state.consumer.assigned(), audit.apps[1].state.consumer.assigned()]
    assert owned[0] and owned[1] and not owned[0] & owned[1]  # the group split them
    verified = (await audit.client.get("/v1/audit/verify", headers=audit.headers())).json()
    assert (
        verified["ok"] is True and verified["entries"] == total and verified["chains"] == len(ids)
    )
    # Filters.
    account = next(iter(ids))
    assert len(await all_entries(audit, account=account)) == len(ids[account])
    failed = await all_entries(audit, type="login.failed")
    assert failed and all(i["type"] == "login.failed" for i in failed)
    assert all(i["actor"] == "anonymous" for i in await all_entries(audit, actor="anonymous"))


async def test_tampering_is_named_by_verify(audit: Audit, database_url: str) -> None:
    ids = await activity(audit.store, accounts=3, each=4)
    await ingested(audit, sum(len(v) for v in ids.values()))
    owner = await asyncpg.connect(database_url)
    try:
        # The append-only triggers hold even for the owner...
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await owner.execute("UPDATE audit.entries SET actor = 'x'")
        # ...until a superuser disables them.
        await owner.execute("ALTER TABLE audit.entries DISABLE TRIGGER USER")
        victims = await owner.fetch("SELECT id FROM audit.entries ORDER BY id LIMIT 5")
        changed = victims[1]["id"]
        # The stored bytes themselves, where they say "password"; else a column.
        forged = await owner.fetchval(
            """UPDATE audit.entries SET content = convert_to(
                   replace(convert_from(content, 'UTF8'), '"password"', '"forged"'), 'UTF8')
               WHERE id = $1 AND position('"password"' IN convert_from(content, 'UTF8')) > 0
               RETURNING id""",
            changed,
        )
        if forged is None:
            await owner.execute(
                "UPDATE audit.entries SET actor = 'someone-else' WHERE id = $1", changed
            )
        report = (await audit.client.get("/v1/audit/verify", headers=audit.headers())).json()
        assert report["ok"] is False
        assert report["first_broken"]["id"] == changed
        assert "content" in report["first_broken"]["reason"]

        # Put it back, then delete an entry in the middle of a chain.
        await owner.execute("DELETE FROM audit.entries WHERE id = $1", changed)
        report = (await audit.client.get("/v1/audit/verify", headers=audit.headers())).json()
        assert report["ok"] is False
        broken = report["first_broken"]
        row = await owner.fetchrow(
            "SELECT chain, chain_seq FROM audit.entries WHERE id = $1", broken["id"]
        )
        assert row["chain_seq"] > 1 and "missing" in broken["reason"]
        assert broken["id"] > changed
    finally:
        await owner.execute("ALTER TABLE audit.entries ENABLE TRIGGER USER")
        await owner.close()


async def test_redelivery_from_the_start_stores_nothing_twice(
    audit: Audit, kafka_bootstrap: str
) -> None:
    ids = await activity(audit.store, accounts=3)
    total = sum(len(v) for v in ids.values())
    await ingested(audit, total)
    # Replay the whole topic into it again, under new message offsets.
    records = await read_topic(kafka_bootstrap, audit.topic, until=lambda r: len(r) >= total)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                audit.topic, record.value, key=record.key, headers=list(record.headers)
            )
        marker = await activity(audit.store, accounts=1, each=1)  # something new after them
    finally:
        await producer.stop()
    await ingested(audit, total + 1)
    await eventually(lambda: _all_seen(audit, next(iter(marker.values()))[0]), within=30)
    assert await audit.store.pool.fetchval("SELECT count(*) FROM audit.entries") == total + 1
    report = (await audit.client.get("/v1/audit/verify", headers=audit.headers())).json()
    assert report["ok"] is True


async def _all_seen(audit: Audit, event_id: str) -> bool:
    found = await audit.store.pool.fetchval(
        "SELECT 1 FROM audit.entries WHERE event_id = $1", uuid.UUID(event_id)
    )
    return bool(found)


async def test_a_malformed_message_goes_to_the_dlq_and_ingest_goes_on(
    audit: Audit, kafka_bootstrap: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(audit.topic, b"{not an event", key=b"x")
    finally:
        await producer.stop()
    ids = await activity(audit.store, accounts=1, each=2)
    await ingested(audit, 2)
    dead = await read_topic(kafka_bootstrap, audit.topic + ".dlq", until=lambda r: len(r) >= 1)
    assert dead[0].value == b"{not an event"
    assert dict(dead[0].headers)["dlq_consumer"].endswith(b".audit")
    assert len(next(iter(ids.values()))) == 2


async def test_rebuild_from_the_store_gives_the_same_entries(
    audit: Audit, postgres_url: str, template_database: str
) -> None:
    ids = await activity(audit.store, accounts=4)
    total = sum(len(v) for v in ids.values())
    await ingested(audit, total)
    name = f"twofa_rebuild_{uuid.uuid4().hex[:10]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        target = await asyncpg.create_pool(
            with_database(postgres_url, name), min_size=1, max_size=2
        )
        from shared.platform.db import create_pool

        await target.close()
        target = await create_pool(with_database(postgres_url, name), min_size=1, max_size=4)
        try:
            rows = await audit.store.pool.fetch("SELECT * FROM events ORDER BY position")
            async with target.acquire() as conn:
                await conn.copy_records_to_table(
                    "events",
                    records=[tuple(r.values()) for r in rows],
                    columns=list(rows[0].keys()),
                )
            read, added = await rebuild(EventStore(target, REGISTRY))
            assert read == len(rows) and added == total
            again = await rebuild(EventStore(target, REGISTRY))
            assert again == (len(rows), 0)  # idempotent
            original = await audit.store.pool.fetch(CHAIN_ROWS)
            rebuilt = await target.fetch(CHAIN_ROWS)
            assert [tuple(r) for r in rebuilt] == [tuple(r) for r in original]
        finally:
            await target.close()
    finally:
        await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_live_tail_is_resumable_with_last_event_id(audit: Audit) -> None:
    # httpx's ASGI transport buffers whole responses: a real server streams them. A reader
    # only (no Kafka), so the fixture's two instances keep the consumer group to themselves.
    reader = without_broker(audit.settings)
    async with (
        served(create_app(reader, clock=audit.clock)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await _tail_and_resume(audit, http)


async def _tail_and_resume(audit: Audit, http: httpx.AsyncClient) -> None:
    started = asyncio.Event()

    async def collect(headers: dict[str, str], want: int) -> list[tuple[int, str]]:
        got: list[tuple[int, str]] = []
        async with http.stream("GET", "/v1/audit/events/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = None
            async for line in response.aiter_lines():
                if line == ": twofa audit stream":  # sent once its start point is fixed
                    started.set()
                elif line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: ") and event_id is not None:
                    got.append((event_id, orjson.loads(line[6:])["event_id"]))
                    if len(got) >= want:
                        return got
        return got

    listening = asyncio.create_task(asyncio.wait_for(collect(audit.headers(), 5), 60))
    # The stream starts at the log's end when it is opened: only what comes after is sent.
    opened = asyncio.create_task(started.wait())
    await asyncio.wait({listening, opened}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    opened.cancel()
    assert started.is_set(), listening.result() if listening.done() else "no stream after 30 s"
    ids = await activity(audit.store, accounts=1, each=5)
    first = await listening
    assert [e for _, e in first] == next(iter(ids.values()))
    # Resume after the second one: the rest, and nothing before.
    resumed = await asyncio.wait_for(
        collect({**audit.headers(), "Last-Event-ID": str(first[1][0])}, 3), 30
    )
    assert resumed == first[2:]


async def test_export_ndjson_and_csv(audit: Audit) -> None:
    ids = await activity(audit.store, accounts=2, each=3)
    total = sum(len(v) for v in ids.values())
    await ingested(audit, total)
    ndjson = await audit.client.get("/v1/audit/export", headers=audit.headers())
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in ndjson.text.splitlines()]
    assert len(lines) == total
    exported = await audit.client.get(
        "/v1/audit/export", params={"format": "csv"}, headers=audit.headers()
    )
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == total and rows[0]["hash"] == lines[0]["hash"]
    future = (audit.clock() + timedelta(days=1)).isoformat()
    empty = await audit.client.get(
        "/v1/audit/export", params={"since": future}, headers=audit.headers()
    )
    assert empty.text == ""


async def test_summary_counts_and_top_accounts(audit: Audit) -> None:
    ids = await activity(audit.store, accounts=6, each=2)
    await ingested(audit, sum(len(v) for v in ids.values()))
    body = (await audit.client.get("/v1/audit/summary", headers=audit.headers())).json()
    assert body["counts"]["account.registered"] == 6
    assert body["counts"]["twofa.otp_failed"] == sum(n % 3 for n in range(6))
    top = body["top_accounts"]["otp_failures"]
    assert top[0]["count"] == 2 and len(top) == 4


ACCESS_CASES = [
    ("none", 401),
    ("garbage", 401),
    ("expired", 401),
    ("no_role", 403),
    ("support_role", 403),
    ("foreign_key", 401),
    ("wrong_audience", 401),
]


async def test_only_security_bearers_get_in_and_see_nothing(audit: Audit) -> None:
    await activity(audit.store, accounts=1, each=1)
    await ingested(audit, 1)
    for case, status in ACCESS_CASES:
        await _refused(audit, case, status)


async def _refused(audit: Audit, case: str, status: int) -> None:
    secret_data = "u0@x.org"
    tokens = {
        "none": None,
        "garbage": "not.a.token",
        "expired": issue(audit.settings, audit.clock, age_minutes=60),
        "no_role": issue(audit.settings, audit.clock, roles=()),
        "support_role": issue(audit.settings, audit.clock, roles=("support",)),
        "foreign_key": TokenIssuer(
            SigningKeys.generate(audit.settings.signing_keys().active_kid), issuer="twofa"
        ).issue_access(
            subject="x",
            audience="twofa",
            session_id="s",
            auth_time=audit.clock(),
            amr=("pwd",),
            acr="aal2",
            roles=("security",),
            now=audit.clock(),
        ),
        "wrong_audience": issue(audit.settings, audit.clock, audience="elsewhere"),
    }
    token = tokens[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path in ("/v1/audit/events", "/v1/audit/verify", "/v1/audit/summary", "/v1/audit/export"):
        response = await audit.client.get(path, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert is_problem(response) and secret_data not in response.text


COMMON_BAD = [
    {"since": "yesterday"},
    {"since": "2026-01-01T00:00:00"},  # no offset
    {"until": "2026-13-01T00:00:00Z"},
    {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
]
FILTER_BAD = [
    {"type": "DROP TABLE"},
    {"type": "x" * 500},
    {"account": "'; --"},
    {"account": "\x00"},
    {"actor": "a b"},
    {"actor": "<script>"},
]
BAD_QUERIES = {
    "/v1/audit/events": [
        *COMMON_BAD,
        *FILTER_BAD,
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"cursor": "garbage"},
        {"cursor": "YTE6LTE"},  # a1:-1
        {"cursor": "x" * 200},
    ],
    "/v1/audit/export": [*COMMON_BAD, *FILTER_BAD, {"format": "xml"}, {"format": ""}],
    "/v1/audit/summary": COMMON_BAD,
}


async def test_bad_query_parameters_are_4xx_problems(audit: Audit) -> None:
    for path, cases in BAD_QUERIES.items():
        for params in cases:
            response = await audit.client.get(path, params=params, headers=audit.headers())
            assert 400 <= response.status_code < 500, (path, params, response.text)
            assert is_problem(response), (path, params)
    for last_event_id in ("abc", "-1", "1" * 30):
        bad_resume = await audit.client.get(
            "/v1/audit/events/stream", headers={**audit.headers(), "Last-Event-ID": last_event_id}
        )
        assert bad_resume.status_code == 422 and is_problem(bad_resume)


# A parameter given twice is refused by name, never answered with one of its values.
REPEATED = [
    ("/v1/audit/events", [("actor", "operator:a"), ("actor", "operator:b")], ["actor"]),
    ("/v1/audit/events", [("type", "twofa.enabled"), ("type", "twofa.enabled")], ["type"]),
    ("/v1/audit/events", [("limit", "5"), ("limit", "500")], ["limit"]),
    ("/v1/audit/events", [("account", "a"), ("cursor", "x"), ("account", "b")], ["account"]),
    ("/v1/audit/export", [("format", "csv"), ("format", "ndjson")], ["format"]),
    (
        "/v1/audit/export",
        [("actor", "x"), ("actor", "y"), ("type", "a"), ("type", "b")],
        ["actor", "type"],
    ),
    ("/v1/audit/summary", [("since", "2026-01-01T00:00:00Z")] * 2, ["since"]),
    ("/v1/audit/verify", [("unknown", "1"), ("unknown", "2")], ["unknown"]),
    ("/v1/audit/events/stream", [("type", "a"), ("type", "b")], ["type"]),
]


async def test_a_query_parameter_given_twice_is_refused_by_name(audit: Audit) -> None:
    for path, params, names in REPEATED:
        query = httpx.QueryParams(tuple(params))
        response = await audit.client.get(path, params=query, headers=audit.headers())
        assert response.status_code == 422 and is_problem(response), (path, response.text)
        assert response.json()["code"] == "invalid_request"
        assert response.json()["errors"] == [
            {
                "field": f"query.{name}",
                "message": "given more than once; this parameter takes one value",
            }
            for name in names
        ], path


async def test_auth_and_enrolment_actions_reach_the_audit_log_in_order(
    audit: Audit, database_url: str, kafka_bootstrap: str
) -> None:
    from services.auth.main import create_app as auth_app
    from services.enrolment.main import create_app as enrolment_app
    from tests.support.totp import otp

    settings = audit.settings
    async with (
        client_for(auth_app(settings, clock=audit.clock)) as auth,
        client_for(enrolment_app(settings, clock=audit.clock)) as enrol,
    ):
        password, username = "correct horse battery staple", f"ann-{uuid.uuid4().hex[:6]}"
        registered = await auth.post(
            "/v1/accounts",
            json={"username": username, "email": "ann@example.org", "password": password},
        )
        account_id = registered.json()["account_id"]
        login = await auth.post("/v1/login", json={"username": username, "password": password})
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        started = await enrol.post("/v1/2fa/enrolment", headers=bearer)
        secret = started.json()["secret"]
        await enrol.post("/v1/2fa/enrolment/confirm", headers=bearer, json={"otp": "000000"})
        await enrol.post(
            "/v1/2fa/enrolment/confirm", headers=bearer, json={"otp": otp(secret, audit.clock())}
        )
    expected = [
        "account.registered",
        "login.succeeded",
        "session.started",
        "twofa.enrolment_started",
        "twofa.otp_failed",
        "twofa.enabled",
    ]

    async def all_there() -> bool:
        items = await all_entries(audit, account=account_id)
        return len(items) >= len(expected)

    await eventually(all_there, within=60)
    items = await all_entries(audit, account=account_id)
    assert [i["type"] for i in items] == expected
    assert [i["chain_seq"] for i in items] == list(range(1, len(expected) + 1))
    assert len({i["event_id"] for i in items}) == len(items)
    assert "password_hash" not in str(items) and secret not in str(items)
