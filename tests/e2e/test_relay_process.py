"""The ``twofa`` command as real processes: migrate, and a relay killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import asyncpg
import pytest

from shared.devtools.servers import free_port
from shared.domain.events import EmailChanged
from shared.eventstore.envelope import NewEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from tests.support.kafka import event_ids, read_topic
from tests.support.logins import process_env
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


def twofa(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env, "TWOFA_METRICS_PORT": str(free_port())},  # two relays at once
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_migrate_command_is_idempotent(database_url: str) -> None:
    env = {"TWOFA_DATABASE_URL": database_url}
    first = twofa("migrate", env=env)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert b"applied 0 migration(s)" in out  # the template already has them


def test_bad_configuration_exits_with_a_clear_message() -> None:
    secret_looking = "k1:c2hvcnQ="  # 5 bytes, not a usable key
    env = {"TWOFA_ENCRYPTION_KEYS": secret_looking, "TWOFA_ENV": "production"}
    proc = twofa("serve", "auth", env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"configuration error" in err and b"32 bytes" in err
    assert b"c2hvcnQ" not in err


async def test_relay_killed_mid_stream_publishes_everything_after_restart(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    store = EventStore(pool, REGISTRY)
    ids: list[str] = []
    for _ in range(100):
        batch = [
            NewEvent(EmailChanged(email=f"{uuid.uuid4().hex}@example.org", previous_email="a@b.c"))
            for _ in range(20)
        ]
        await store.append(f"account-{uuid.uuid4()}", batch, 0)
        ids += [str(e.event_id) for e in batch]
    env = process_env(
        {
            "TWOFA_DATABASE_URL": database_url,
            "TWOFA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TWOFA_KAFKA_TOPIC": topic,
            "TWOFA_RELAY_NAME": topic,
            "TWOFA_RELAY_BATCH_SIZE": "50",
        },
        "relay",
    )
    first = twofa("relay", env=env)
    try:
        await eventually(
            lambda: pool.fetchval("SELECT count(*) FROM relay_checkpoints WHERE name = $1", topic),
            within=30,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    published_before = await pool.fetchval(
        "SELECT count(*) FROM events e, relay_checkpoints c"
        " WHERE c.name = $1 AND e.position <= c.position",
        topic,
    )
    assert 0 < published_before < len(ids), "the kill should land mid-stream"

    second = twofa("relay", env=env)
    try:
        records = await read_topic(
            kafka_bootstrap, topic, until=lambda r: set(event_ids(r)) >= set(ids), within=60
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert second.returncode == 0  # SIGTERM is a graceful stop
    counts = Counter(event_ids(records))
    assert set(counts) == set(ids)  # nothing lost
    # At least once: only what was in flight at the kill may appear twice.
    assert sum(n - 1 for n in counts.values()) <= 50
