"""Kafka client security: TLS and SASL settings reach every client, production refuses
an unauthenticated connection, and no password shows in errors or reprs."""

from __future__ import annotations

import datetime
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.messaging.consumer import events_consumer
from shared.messaging.kafka import (
    KafkaSecurity,
    create_consumer,
    create_producer,
    create_reader,
    security_of,
)
from shared.messaging.revocations import revocation_feed
from shared.platform.clock import utc_now
from shared.platform.config import ConfigurationError, Settings
from shared.platform.key_holders import Process

PASSWORD = secrets.token_urlsafe(24)
SCRAM = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "twofa-audit",
    "kafka_sasl_password": PASSWORD,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)


def settings(process: Process | None = None, /, **values: Any) -> Settings:
    """``Settings.load`` from an environment holding ``values`` (as ``TWOFA_<NAME>``)."""
    values = {"kafka_bootstrap_servers": "127.0.0.1:9092"} | values
    with pytest.MonkeyPatch.context() as env:
        for name, value in values.items():
            if value is not None:
                env.setenv(f"TWOFA_{name.upper()}", value)
        return Settings.load(process)


def client_security(client: AIOKafkaProducer | AIOKafkaConsumer) -> tuple[Any, ...]:
    """What the aiokafka client will do on the wire (its connection settings)."""
    inner = client.client if isinstance(client, AIOKafkaProducer) else client._client
    return (
        inner._security_protocol,
        inner._sasl_mechanism,
        inner._sasl_plain_username,
        inner._sasl_plain_password,
        inner._ssl_context is not None,
    )


async def test_scram_over_tls_reaches_producers_consumers_readers_and_the_service_loops() -> None:
    chosen = settings(**SCRAM)
    security = security_of(chosen)
    wanted = ("SASL_SSL", "SCRAM-SHA-512", "twofa-audit", PASSWORD, True)
    clients = [
        create_producer("127.0.0.1:9092", security=security),
        create_consumer(
            "127.0.0.1:9092", ["t"], group_id="g", fetch_max_wait_ms=10, security=security
        ),
        create_reader("127.0.0.1:9092", security=security),
    ]
    try:
        for client in clients:
            assert client_security(client) == wanted
    finally:
        for client in clients:
            await client.stop()
    # The loops every service runs take it from the settings.
    loop = events_consumer(chosen, None, "audit", None)  # type: ignore[arg-type]
    _, feed = revocation_feed(chosen, utc_now)
    assert feed is not None
    for used in (loop.security, feed.security):
        assert used.client_options().keys() == security.client_options().keys()
        assert (used.protocol, used.sasl_mechanism, used.username, used.password) == wanted[:4]


def test_plaintext_is_the_development_default_and_takes_no_options() -> None:
    security = security_of(settings())
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # SASL settings while the protocol says no SASL
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "TWOFA_KAFKA_SASL_\\* are set"),
        # TLS files while the protocol says no TLS
        ({"kafka_ssl_cafile": "/ca.pem"}, "TWOFA_KAFKA_SSL_\\* are set"),
        (
            SCRAM | {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": "/ca.pem"},
            "TWOFA_KAFKA_SSL_\\* are set",
        ),
        # a certificate without its key
        ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"}, "go together"),
    ],
)
def test_inconsistent_kafka_security_is_refused_with_the_setting_named(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings(**values)


@pytest.mark.parametrize(
    "missing",
    [
        {"kafka_sasl_mechanism": None, "kafka_sasl_username": None, "kafka_sasl_password": None},
        {"kafka_sasl_mechanism": None},
        {"kafka_sasl_username": None},
        {"kafka_sasl_password": None},
    ],
)
def test_sasl_without_its_mechanism_user_and_password_is_refused_where_clients_are_made(
    missing: dict[str, None],
) -> None:
    chosen = settings(**(SCRAM | missing))  # migrate and the CLI need no broker credentials
    with pytest.raises(ConfigurationError, match="needs TWOFA_KAFKA_SASL_MECHANISM"):
        security_of(chosen)
    with pytest.raises(ConfigurationError, match="needs TWOFA_KAFKA_SASL_MECHANISM"):
        events_consumer(chosen, None, "audit", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["PLAIN", "TLS", "sasl_ssl ", ""])
def test_an_unknown_protocol_is_refused(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_KAFKA_SECURITY_PROTOCOL", protocol)
    with pytest.raises(ConfigurationError, match="TWOFA_KAFKA_SECURITY_PROTOCOL"):
        Settings.load()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "PLAINTEXT is refused in production"),
        ({"kafka_security_protocol": "SSL"}, "does not authenticate twofa"),
        (
            SCRAM | {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "password in clear",
        ),
    ],
)
def test_production_refuses_a_broker_connection_that_does_not_authenticate(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings("relay", **production_keys(), **values)


@pytest.mark.parametrize(
    "values",
    [
        SCRAM,
        SCRAM | {"kafka_security_protocol": "SASL_PLAINTEXT"},  # a private network (compose)
        SCRAM | {"kafka_sasl_mechanism": "SCRAM-SHA-256"},
        SCRAM | {"kafka_sasl_mechanism": "PLAIN"},  # over TLS
    ],
)
def test_production_accepts_scram_and_tls(values: dict[str, Any]) -> None:
    settings("relay", **production_keys(), **values)


def production_keys() -> dict[str, Any]:
    """A production relay's one key ring (it holds no other key)."""
    from shared.security.keys import SigningKeys

    return {
        "env": "production",
        "kafka_bootstrap_servers": "kafka:9092",
        "event_signing_keys": SigningKeys.generate("events-2026").to_config(),
    }


def test_no_password_in_reprs_or_errors() -> None:
    chosen = settings(**SCRAM)
    assert PASSWORD not in repr(security_of(chosen))
    assert PASSWORD not in repr(chosen)
    with pytest.raises(ConfigurationError) as refused:
        settings(**(SCRAM | {"kafka_security_protocol": "PLAINTEXT"}))
    assert PASSWORD not in str(refused.value)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A CA certificate and its key, as PEM files (the CA signs itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twofa test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_files_are_loaded_into_the_clients_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    security = security_of(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(cert),
            kafka_ssl_certfile=str(cert),
            kafka_ssl_keyfile=str(key),
        )
    )
    assert security.ssl_context is not None
    assert security.ssl_context.cert_store_stats()["x509_ca"] == 1
    assert security.ssl_context.check_hostname  # the broker's name is checked


@pytest.mark.parametrize(
    "broken",
    [
        {"kafka_ssl_cafile": "/nonexistent/ca.pem"},
        {"kafka_ssl_cafile": "KEY"},  # a private key where the CA should be
        {"kafka_ssl_certfile": "/nonexistent/c.pem", "kafka_ssl_keyfile": "/nonexistent/k.pem"},
    ],
)
def test_unreadable_tls_files_are_a_configuration_error(
    tmp_path: Path, broken: dict[str, str]
) -> None:
    _, key = self_signed(tmp_path)
    values = {k: str(key) if v == "KEY" else v for k, v in broken.items()}
    chosen = settings(kafka_security_protocol="SSL", **values)
    with pytest.raises(ConfigurationError, match="TWOFA_KAFKA_SSL_CAFILE"):
        security_of(chosen)


def test_a_security_value_is_comparable_and_hides_the_password() -> None:
    one = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "u", "secret-value")
    assert one == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "u", "secret-value")
    assert "secret-value" not in repr(one)


@pytest.mark.parametrize("argv", [["relay"], ["serve", "audit"], ["serve", "auth"]])
def test_the_cli_stops_before_serving_when_broker_credentials_are_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from services.cli import main

    for name, value in {
        "TWOFA_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "TWOFA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "TWOFA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TWOFA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TWOFA_KAFKA_SASL_USERNAME": "twofa-audit",
        "TWOFA_METRICS_PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2  # no password: before any connection or port
    assert "needs TWOFA_KAFKA_SASL_MECHANISM" in capsys.readouterr().err
