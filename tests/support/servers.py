"""Where the tests find PostgreSQL and Kafka, in the order the design fixes.

1. ``TWOFA_DATABASE_URL`` / ``TWOFA_KAFKA_BOOTSTRAP_SERVERS`` when set;
2. otherwise testcontainers, when a Docker engine answers;
3. otherwise the embedded pair (PostgreSQL wheel, Tansu broker).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from shared.devtools.servers import EmbeddedBroker, EmbeddedPostgres


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def with_database(dsn: str, database: str, user: str | None = None, password: str = "") -> str:
    """The same server URL pointed at another database (and optionally another user)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rpartition("@")[2]
        secret = f":{quote(password)}" if password else ""
        netloc = f"{quote(user)}{secret}@{host}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(database), parts.query, ""))


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """Yield an admin URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TWOFA_DATABASE_URL")
    if url:
        yield url
        return
    if docker_engine_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as container:
            yield container.get_connection_url()
        return
    with EmbeddedPostgres(workdir / "postgres", delete_on_stop=True) as server:
        yield server.dsn()


@contextlib.contextmanager
def kafka(workdir: Path) -> Iterator[str]:
    """Yield the bootstrap servers of a Kafka-protocol broker."""
    servers = os.environ.get("TWOFA_KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    if docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        yield broker.bootstrap_servers
