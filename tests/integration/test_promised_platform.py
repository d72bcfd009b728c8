"""What the README promises of every service's shell and of the relay, shown for real.

``/readyz`` answers 503 naming the part that does not answer, a consumer that has not
caught up included; CORS lets the portal's
origin in and no other; the relay polls when no NOTIFY comes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from services.audit.main import create_app as audit_app
from services.auth.main import create_app as auth_app
from services.enrolment.main import create_app as enrolment_app
from shared.devtools.servers import free_port
from shared.domain.events import AccountRegistered
from shared.eventstore.envelope import NewEvent
from shared.eventstore.notify import CHANNEL
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.consumer import Delivery, events_consumer
from shared.messaging.integration import IntegrationEvent
from shared.platform.background import Runner
from shared.platform.clock import utc_now
from shared.platform.config import ConfigurationError, Settings
from shared.platform.metrics import serve_metrics
from shared.web.app import service_app
from tests.support.apps import client_for
from tests.support.database import admin_sql
from tests.support.kafka import event_ids, read_topic
from tests.support.polling import eventually
from tests.support.relay import make_relay, relaying, running
from tests.support.settings import settings_for, with_kafka

pytestmark = pytest.mark.integration

APPS: dict[str, Callable[[Settings], FastAPI]] = {
    "auth": auth_app,
    "enrolment": enrolment_app,
    "audit": audit_app,
}


CONSUMERS = {
    "auth": {"sessions": True},
    "enrolment": {"labels": True, "revocations": True},
    "audit": {"audit": True, "revocations": True},
}


async def test_readyz_is_503_naming_what_does_not_answer(
    postgres_url: str, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    settings = settings_for(database_url, **with_kafka(kafka_bootstrap, topic))
    async with (
        client_for(auth_app(settings)) as auth,
        client_for(enrolment_app(settings)) as enrolment,
        client_for(audit_app(settings)) as audit,
    ):
        services = {"auth": auth, "enrolment": enrolment, "audit": audit}
        for name, client in services.items():
            # The topic is empty: each consumer is caught up once it has connected.
            await eventually(partial(_ready, client), within=30)
            ready = await client.get("/readyz")
            assert ready.json() == {
                "status": "ready",
                "checks": {"database": True, "broker": True, **CONSUMERS[name]},
            }
        # The database goes away under the running services.
        name = unquote(urlsplit(database_url).path.lstrip("/"))
        await admin_sql(postgres_url, f'DROP DATABASE "{name}" WITH (FORCE)')
        for service, client in services.items():
            gone = await client.get("/readyz")
            assert gone.status_code == 503
            assert gone.json() == {
                "status": "unavailable",
                # Caught up once, caught up for good: only the database is missing.
                "checks": {"database": False, "broker": True, **CONSUMERS[service]},
            }


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_readyz_is_503_until_a_consumer_consumed_what_the_topic_held_at_start(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    store = EventStore(pool, REGISTRY)
    for _ in range(3):  # on the topic before the service starts, through the real relay
        event = NewEvent(AccountRegistered(username="u", email="u@x.org", password_hash="H"))
        await store.append(f"account-{uuid.uuid4()}", [event], 0)
    async with relaying(database_url, store, kafka_bootstrap, topic):
        await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 3, within=20)

    entered, gate, handled = asyncio.Event(), asyncio.Event(), []

    async def paced(conn: asyncpg.Connection, event: IntegrationEvent, _: Delivery) -> None:
        entered.set()
        await gate.wait()  # the test says when the consumer may go on
        handled.append(event.id)

    settings = settings_for(database_url, **with_kafka(kafka_bootstrap, topic))

    async def start(app: FastAPI, pool: asyncpg.Pool) -> list[Runner]:
        consumer = events_consumer(settings, pool, "paced", paced)
        app.state.consumers["paced"] = consumer.caught_up
        return [consumer.run]

    app = service_app(
        settings, name="paced", summary="s", router=APIRouter(), clock=utc_now, start=start
    )
    async with client_for(app) as client:
        await asyncio.wait_for(entered.wait(), 30)  # holding the first of the three
        behind = await client.get("/readyz")
        assert behind.status_code == 503
        assert behind.json() == {
            "status": "unavailable",
            "checks": {"database": True, "broker": True, "paced": False},
        }
        gate.set()
        await eventually(lambda: _ready(client), within=30)
        assert len(handled) == 3  # ready only once all three were handled and committed
        assert (await client.get("/readyz")).json()["checks"]["paced"] is True


async def test_readyz_names_a_broker_that_does_not_answer(database_url: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = settings_for(database_url, kafka_bootstrap_servers=nobody)
    async with client_for(auth_app(settings)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "checks": {"database": True, "broker": False, "sessions": False},
    }


PORTAL = "https://portal.example.org"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize("service", sorted(APPS))
async def test_cors_lets_the_portal_in_and_refuses_a_foreign_origin(
    service: str, database_url: str
) -> None:
    settings = settings_for(
        database_url, portal_origins=f"{PORTAL},http://localhost:8001", without_broker=True
    )
    async with client_for(APPS[service](settings)) as client:
        portal = await client.options("/v1/login", headers={"Origin": PORTAL, **PREFLIGHT})
        assert portal.status_code == 200
        assert portal.headers["access-control-allow-origin"] == PORTAL
        assert "POST" in portal.headers["access-control-allow-methods"]
        assert {"authorization", "content-type"} <= {
            h.strip().lower() for h in portal.headers["access-control-allow-headers"].split(",")
        }
        for foreign in ("https://evil.example", "https://portal.example.org.evil.example", "null"):
            refused = await client.options("/v1/login", headers={"Origin": foreign, **PREFLIGHT})
            assert refused.status_code == 400, foreign
            assert "access-control-allow-origin" not in refused.headers, foreign
            # A plain request from there is answered, but the browser may not read it.
            plain = await client.get("/healthz", headers={"Origin": foreign})
            assert plain.status_code == 200
            assert "access-control-allow-origin" not in plain.headers, foreign
        mine = await client.get("/healthz", headers={"Origin": PORTAL})
        assert mine.headers["access-control-allow-origin"] == PORTAL


@pytest.mark.parametrize("service", sorted(APPS))
async def test_metrics_are_not_on_the_public_port_but_on_their_own(
    service: str, database_url: str
) -> None:
    """The counters tell a real name's wrong password from an unknown one's (the first
    appends an event that consumers count), so only Prometheus may read them."""
    port = free_port()
    settings = settings_for(
        database_url, without_broker=True, metrics_host="127.0.0.1", metrics_port=port
    )
    async with client_for(APPS[service](settings)) as client:
        await client.get("/healthz")
        public = await client.get("/metrics")
        assert public.status_code == 404 and public.json()["code"] == "not_found"
        assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]
    assert serve_metrics(settings, service) == port
    async with httpx.AsyncClient() as http:
        private = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert private.status_code == 200
    assert (
        f'twofa_http_requests_total{{route="/healthz",service="{service}",status="200"}}'
        in private.text
    )
    with pytest.raises(
        ConfigurationError, match=f"TWOFA_METRICS_PORT: cannot listen on 127.0.0.1:{port}"
    ):
        serve_metrics(settings, service)  # the port is taken (by the first listener)
    off = settings.model_copy(update={"metrics_port": 0})
    assert serve_metrics(off, service) is None


async def test_relay_polls_when_no_notify_arrives(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    store = EventStore(pool, REGISTRY)  # no notifier: its appends send no NOTIFY
    listener = await asyncpg.connect(database_url)
    heard: list[object] = []
    await listener.add_listener(CHANNEL, lambda *args: heard.append(args))
    relay = make_relay(database_url, store, kafka_bootstrap, topic, poll_interval=1.0)

    async def append() -> str:
        event = NewEvent(AccountRegistered(username="u", email="u@x.org", password_hash="H"))
        await store.append(f"account-{uuid.uuid4()}", [event], 0)
        return str(event.event_id)

    try:
        async with running(relay):
            await eventually(lambda: relay.is_active)
            first = await append()
            # Once the first is out, the relay has read the store and sleeps: only its
            # polling can find the second (a NOTIFY would show in ``heard``).
            await read_topic(kafka_bootstrap, topic, until=lambda r: len(r) >= 1, within=20)
            second = await append()
            records = await read_topic(
                kafka_bootstrap, topic, until=lambda r: len(r) >= 2, within=20
            )
    finally:
        await listener.close()
    assert sorted(event_ids(records)) == sorted([first, second])
    assert heard == []
