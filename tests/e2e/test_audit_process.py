"""``twofa serve audit`` killed with SIGKILL mid-stream: nothing lost, nothing twice.

"Twice" is counted before the unique index on ``audit.entries`` could hide it: a trigger
records every insert of an event id the log holds already (``tests/support/truth.py``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from shared.devtools.servers import free_port
from shared.domain import events as ev
from shared.eventstore.envelope import NewEvent
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.relay import Relay, RelayOptions
from shared.security.keys import SigningKeys
from shared.security.tokens import TokenIssuer
from tests.support.clock import Clock
from tests.support.logins import process_env
from tests.support.polling import eventually, wait_until_ready
from tests.support.settings import event_signer
from tests.support.truth import (
    audit_entries,
    install_counters,
    processed_rows,
    refused_audit_inserts,
    written_events,
)

pytestmark = pytest.mark.e2e

EVENTS = 1200


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys.generate("e2e-audit")


def audit_process(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "audit", "--port", str(port)],
        # Its own login, keys and metrics port, like any process.
        env={**process_env(env, "audit"), "TWOFA_METRICS_PORT": str(free_port())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def env(
    database_url: str, kafka_bootstrap: str, topic: str, keys: SigningKeys, event_keys: SigningKeys
) -> Iterator[dict[str, str]]:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    yield {
        **os.environ,
        "TWOFA_DATABASE_URL": database_url,
        "TWOFA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TWOFA_KAFKA_TOPIC": topic,
        "TWOFA_KAFKA_GROUP_PREFIX": f"e2e{uuid.uuid4().hex[:8]}",
        "TWOFA_ENCRYPTION_KEYS": f"k1:{key}",
        "TWOFA_JWT_SIGNING_KEYS": keys.to_config(),
        "TWOFA_RECOVERY_CODE_KEY": key,
        "TWOFA_DEVICE_TOKEN_KEY": key,
        "TWOFA_EVENT_VERIFY_KEYS": event_keys.public_config(),
    }


async def produce(store: EventStore, done: asyncio.Event) -> None:
    """A steady stream: 60 accounts, 20 events each, appended in small steps."""
    accounts = [str(uuid.uuid4()) for _ in range(60)]
    versions = dict.fromkeys(accounts, 0)
    for step in range(EVENTS // len(accounts)):
        for account in accounts:
            failed = ev.LoginFailed(
                reason="password",
                consecutive_failures=step + 1,
                trusted_device=False,
                at=Clock().now,
            )
            versions[account] = await store.append(
                f"account-{account}", [NewEvent(failed)], versions[account]
            )
        await asyncio.sleep(0.01)
    done.set()


async def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    env: dict[str, str],
    keys: SigningKeys,
) -> None:
    async with pool.acquire() as conn:
        await install_counters(conn, database_url)
    store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
    relay = Relay(
        dsn=database_url,
        store=store,
        mapping=PUBLIC_EVENTS,
        signer=event_signer(),
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic, poll_interval=0.2),
    )
    stop, produced = asyncio.Event(), asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    producing = asyncio.create_task(produce(store, produced))
    port = free_port()
    first = audit_process(env, port)
    try:

        async def some_stored() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM audit.entries") >= 100)

        await eventually(some_stored, within=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stored_at_kill = await pool.fetchval("SELECT count(*) FROM audit.entries")
        assert stored_at_kill < EVENTS, "the kill should land mid-stream"

        second = audit_process(env, port)
        try:
            await asyncio.wait_for(producing, 120)

            async def all_stored() -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM audit.entries") >= EVENTS)

            await eventually(all_stored, within=120)
            async with pool.acquire() as conn:
                written = {e.event_id for e in await written_events(conn, REGISTRY.types())}
                audited = await audit_entries(conn)
                refused = await refused_audit_inserts(conn)
                handled = await processed_rows(conn)
            assert len(written) == EVENTS
            # Each stored event once in the log, and no second insert of it tried (refused).
            assert audited == Counter(dict.fromkeys(written, 1))
            assert not refused, f"{refused.total()} audit inserts refused: {list(refused)[:5]}"
            group = f"{env['TWOFA_KAFKA_GROUP_PREFIX']}.audit"
            assert handled == Counter({(group, event_id): 1 for event_id in written})
            wait_until_ready(f"http://127.0.0.1:{port}", 30)
            token = TokenIssuer(keys, issuer="twofa").issue_access(
                subject="reviewer",
                audience="twofa",
                session_id="s",
                auth_time=Clock().now,
                amr=("pwd", "otp", "mfa"),
                acr="aal2",
                roles=("security",),
                now=Clock().now,
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                report = (
                    await http.get("/v1/audit/verify", headers={"Authorization": f"Bearer {token}"})
                ).json()
            assert report["ok"] is True and report["entries"] == EVENTS and report["chains"] == 60
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        stop.set()
        producing.cancel()
        await asyncio.wait_for(relaying, 15)
