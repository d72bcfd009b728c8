"""Kafka clients through aiokafka, set up the way twofa needs them.

No idempotent producer and no transactions (the embedded broker has neither, and the
design does not need them: the store is the outbox, consumers deduplicate by event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from shared.platform.config import ConfigurationError, Settings

__all__ = [
    "PLAINTEXT",
    "KafkaSecurity",
    "create_consumer",
    "create_producer",
    "create_reader",
    "ensure_topics",
    "security_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSecurity:
    """How a client authenticates to the brokers and protects the connection: the
    ``security_protocol``, SASL and TLS options every aiokafka client takes."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and the admin."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl_mechanism is not None:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        return options

    def __repr__(self) -> str:  # never the password
        return f"KafkaSecurity({self.protocol}, {self.sasl_mechanism}, user={self.username!r})"


PLAINTEXT = KafkaSecurity()


def security_of(settings: Settings) -> KafkaSecurity:
    """The client security ``settings`` name (``TWOFA_KAFKA_SECURITY_PROTOCOL`` and its
    SASL and TLS settings). A SASL protocol without its mechanism, username and password,
    or a certificate file that cannot be read, is a configuration error."""
    protocol = settings.kafka_security_protocol
    if protocol.uses_sasl and None in (
        settings.kafka_sasl_mechanism,
        settings.kafka_sasl_username,
        settings.kafka_sasl_password,
    ):
        raise ConfigurationError(
            f"TWOFA_KAFKA_SECURITY_PROTOCOL={protocol} needs TWOFA_KAFKA_SASL_MECHANISM,"
            " TWOFA_KAFKA_SASL_USERNAME and TWOFA_KAFKA_SASL_PASSWORD"
        )
    context = None
    if protocol.uses_tls:
        try:
            context = create_ssl_context(
                cafile=settings.kafka_ssl_cafile,
                certfile=settings.kafka_ssl_certfile,
                keyfile=settings.kafka_ssl_keyfile,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                "TWOFA_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE cannot be loaded:"
                f" {type(exc).__name__}: {exc.strerror or exc}"
            ) from None
    password = settings.kafka_sasl_password
    return KafkaSecurity(
        protocol=protocol.value,
        sasl_mechanism=None
        if settings.kafka_sasl_mechanism is None
        else settings.kafka_sasl_mechanism.value,
        username=settings.kafka_sasl_username,
        password=None if password is None else password.get_secret_value(),
        ssl_context=context,
    )


def create_producer(
    bootstrap_servers: str, *, client_id: str = "twofa", security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica before it counts a send as done."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        **security.client_options(),
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=15_000,
    )


def create_consumer(
    bootstrap_servers: str,
    topics: list[str],
    *,
    group_id: str | None,
    fetch_max_wait_ms: int,
    client_id: str = "twofa",
    security: KafkaSecurity = PLAINTEXT,
) -> AIOKafkaConsumer:
    """A group member that commits offsets only when told to (after its work committed);
    with no group, a reader of the partitions it is assigned."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        isolation_level="read_uncommitted",
        **security.client_options(),
    )


def create_reader(
    bootstrap_servers: str,
    *,
    client_id: str = "twofa",
    fetch_max_wait_ms: int = 500,
    security: KafkaSecurity = PLAINTEXT,
) -> AIOKafkaConsumer:
    """A consumer outside any group (assigned partitions, metadata and end offsets only)."""
    return create_consumer(
        bootstrap_servers,
        [],
        group_id=None,
        fetch_max_wait_ms=fetch_max_wait_ms,
        client_id=client_id,
        security=security,
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    *,
    partitions: int = 4,
    replication_factor: int = 1,
    wait_seconds: float = 30.0,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create the topics that do not exist yet; an existing topic is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security.client_options())
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(
                    [NewTopic(t, partitions, replication_factor) for t in missing]
                )
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()
