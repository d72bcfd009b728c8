"""Fixtures: real servers per session, a fresh database and fresh topics per test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.messaging.kafka import ensure_topics
from shared.platform.db import create_pool, migrate
from shared.security.keys import SigningKeys
from tests.support import servers
from tests.support.database import admin_sql
from tests.support.settings import new_event_keys


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Not under pytest's numbered temp dirs: another pytest session starting on the same
    # machine prunes old ones, and would delete a running server's data under it.
    path = Path(tempfile.mkdtemp(prefix="twofa-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(workdir: Path) -> Iterator[str]:
    with servers.postgres(workdir) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(workdir: Path) -> Iterator[str]:
    with servers.kafka(workdir) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """A migrated database that each test's own database is copied from."""
    name = f"twofa_template_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_sql(postgres_url, f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(servers.with_database(postgres_url, name)))
    yield name
    asyncio.run(admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own (the owner's URL)."""
    name = f"twofa_test_{uuid.uuid4().hex[:12]}"
    await admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield servers.with_database(postgres_url, name)
    await admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=20)
    yield pool
    await pool.close()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    """A topic (and its dead-letter topic) no other test uses."""
    name = f"twofa.events.v1.test-{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, [name, name + ".dlq"])
    return name


@pytest.fixture(autouse=True)
def event_keys() -> SigningKeys:
    """This test's own event signing ring, shared by its relay and its consumers."""
    return new_event_keys()
