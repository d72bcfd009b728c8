"""Configuration from the environment (prefix ``TWOFA_``), one ``Settings`` for every process.

In development a missing key is replaced by a throwaway one (and the log says so); in
production the same gap stops the process before it serves anything.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.security.crypto import DEVELOPMENT_KEY_MARK, new_key
from shared.security.keys import SigningKeys

__all__ = ["ConfigurationError", "Environment", "Settings", "parse_key_ring", "parse_named_keys"]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "twofa.events.v1"


class ConfigurationError(ValueError):
    """The configuration cannot run safely (missing or placeholder secrets in production)."""


class Environment(StrEnum):
    development = "development"
    production = "production"


def parse_named_keys(raw: str, setting: str, size: int) -> dict[str, bytes]:
    """Parse ``kid:base64key,kid2:base64key`` into key id → key of ``size`` bytes."""
    ring: dict[str, bytes] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        kid, sep, encoded = part.partition(":")
        if not sep or not kid:
            raise ConfigurationError(f"{setting} must look like 'kid:base64key,...'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ConfigurationError(f"{setting}: key {kid!r} is not valid base64") from None
        if len(key) != size:
            raise ConfigurationError(f"{setting}: key {kid!r} must be {size} bytes")
        if kid in ring:
            raise ConfigurationError(f"{setting}: key id {kid!r} appears twice")
        ring[kid] = key
    return ring


DEVELOPMENT_KEY_IDS = ("dev-", "local-")  # throwaway keys, and the ones make run writes


def refuse_development_keys(setting: str, ring: Mapping[str, bytes]) -> None:
    """In production: no development key id, no placeholder, no key marked as
    development-only; the error names the setting and the key id, never a value."""
    for kid, key in ring.items():
        if kid.startswith(DEVELOPMENT_KEY_IDS):
            raise ConfigurationError(
                f"{setting}: key id {kid!r} is a development key id, refused in production"
            )
        if len(set(key)) < 8 or key.startswith(DEVELOPMENT_KEY_MARK):
            raise ConfigurationError(
                f"{setting}: key {kid!r} is a placeholder or development key, refused in production"
            )


def parse_signing_ring(
    setting: str, seeds: str, active: str | None, *, production: bool
) -> SigningKeys:
    """An Ed25519 seed ring from ``setting``; in production every key of it is checked."""
    try:
        keys = SigningKeys.from_config(seeds, active)
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None
    if production:
        refuse_development_keys(setting, parse_named_keys(seeds, setting, 32))
    return keys


def _dev_kid() -> str:
    return "dev-" + secrets.token_hex(4)


def parse_key_ring(raw: str) -> dict[str, bytes]:
    """The AES-256 key ring of ``TWOFA_ENCRYPTION_KEYS``."""
    return parse_named_keys(raw, "TWOFA_ENCRYPTION_KEYS", 32)


class Settings(BaseSettings):
    """Every setting twofa reads; the README's configuration table lists them all."""

    model_config = SettingsConfigDict(env_prefix="TWOFA_", extra="ignore")

    env: Environment = Environment.development
    log_level: str = "INFO"

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL the services use (a role without ownership)."
    )
    migration_database_url: str | None = Field(
        default=None, description="PostgreSQL URL that owns the schema; defaults to database_url."
    )
    database_pool_min: int = Field(default=2, ge=1, le=100)
    database_pool_max: int = Field(default=10, ge=1, le=200)

    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = DEFAULT_TOPIC
    kafka_client_id: str = "twofa"
    kafka_group_prefix: str = Field(default="twofa", min_length=1, max_length=100)
    kafka_topic_partitions: int = Field(default=4, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=10)
    # Tansu holds every fetch for the whole wait, so a low wait keeps latency low there.
    kafka_fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=60_000)
    # Prometheus metrics on a listener of their own, never on the public API port. No
    # port: the process's default (METRICS_PORTS); 0: no metrics listener at all.
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=200)
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    # A service without a broker learns no revoked session and audit ingests nothing:
    # only when asked for by name (tests of one service), never in production.
    without_broker: bool = False

    relay_name: str = "twofa.events.v1"
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    relay_standby_retry_seconds: float = Field(default=1.0, gt=0, le=60)

    snapshot_every: int = Field(default=100, ge=1)

    encryption_keys: Annotated[SecretStr | None, NoDecode] = None
    encryption_active_key_id: str | None = None
    jwt_signing_keys: Annotated[SecretStr | None, NoDecode] = None
    jwt_active_key_id: str | None = None
    jwt_verify_keys: str | None = None
    recovery_code_key: SecretStr | None = None
    device_token_key: SecretStr | None = None
    # Integration events on Kafka: the relay signs with these, every consumer verifies.
    event_signing_keys: Annotated[SecretStr | None, NoDecode] = None
    event_signing_active_key_id: str | None = None
    event_verify_keys: str | None = None

    jwt_issuer: str = "twofa"
    jwt_audience: str = "twofa"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=3600)
    mfa_token_ttl_seconds: int = Field(default=300, ge=30, le=900)
    session_ttl_seconds: int = Field(default=43_200, ge=300, le=30 * 86_400)
    open_registration: bool | None = None

    otp_window: int = Field(default=1, ge=0, le=3)
    otp_max_failures: int = Field(default=5, ge=1, le=100)
    otp_lock_minutes: int = Field(default=15, ge=1)
    otp_lock_max_hours: int = Field(default=24, ge=1)
    password_throttle_after: int = Field(default=10, ge=1, le=1000)
    password_max_delay_seconds: int = Field(default=900, ge=1, le=86_400)
    reauth_max_age_seconds: int = Field(default=300, ge=30, le=3600)
    enrolment_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    reset_cooling_off_seconds: int = Field(default=86_400, ge=0)
    enrolment_url: str = Field(default="http://127.0.0.1:8002", max_length=300)
    portal_origins: str = "http://127.0.0.1:8001,http://localhost:8001"
    issuer: str = Field(default="Partner Portal", min_length=1, max_length=100)

    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65_536, ge=1024, le=4_194_304)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _check_secrets(self) -> Self:
        self._check_encryption_keys()
        self._check_signing_keys()
        for name in ("recovery_code_key", "device_token_key"):
            self._check_server_key(name)
        self._check_event_keys()
        if self.without_broker and self.env is Environment.production:
            raise ConfigurationError(
                "TWOFA_WITHOUT_BROKER cannot be set in production: a service without a broker"
                " learns no revoked session and audit ingests nothing"
            )
        if self.database_pool_min > self.database_pool_max:
            raise ConfigurationError("TWOFA_DATABASE_POOL_MIN exceeds TWOFA_DATABASE_POOL_MAX")
        return self

    def _throwaway(self, setting: str) -> None:
        if self.env is Environment.production:
            raise ConfigurationError(f"TWOFA_{setting.upper()} is required in production")
        log.warning(
            "no TWOFA_%s set: using a throwaway key; what it protects now is unreadable "
            "after a restart and unknown to other processes",
            setting.upper(),
        )

    def _check_encryption_keys(self) -> None:
        if self.encryption_keys is None:
            self._throwaway("encryption_keys")
            kid = "dev-" + secrets.token_hex(4)
            self.encryption_keys = SecretStr(f"{kid}:{new_key()}")
            self.encryption_active_key_id = kid
        ring = parse_key_ring(self.encryption_keys.get_secret_value())
        if not ring:
            raise ConfigurationError("TWOFA_ENCRYPTION_KEYS holds no key")
        if self.encryption_active_key_id is None:
            if len(ring) != 1:
                raise ConfigurationError(
                    "TWOFA_ENCRYPTION_ACTIVE_KEY_ID must name one of several encryption keys"
                )
            self.encryption_active_key_id = next(iter(ring))
        if self.encryption_active_key_id not in ring:
            raise ConfigurationError(
                f"TWOFA_ENCRYPTION_ACTIVE_KEY_ID {self.encryption_active_key_id!r} is not a key id"
            )
        if self.env is Environment.production:
            refuse_development_keys("TWOFA_ENCRYPTION_KEYS", ring)

    def _check_signing_keys(self) -> None:
        if self.jwt_signing_keys is None:
            if self.jwt_verify_keys is not None:
                self.verify_keys()  # a process that only verifies tokens
                if self.env is Environment.production:
                    refuse_development_keys(
                        "TWOFA_JWT_VERIFY_KEYS",
                        parse_named_keys(self.jwt_verify_keys, "TWOFA_JWT_VERIFY_KEYS", 32),
                    )
                return
            if self.env is Environment.production:
                raise ConfigurationError(
                    "TWOFA_JWT_SIGNING_KEYS (auth) or TWOFA_JWT_VERIFY_KEYS (the other "
                    "services) is required in production"
                )
            self._throwaway("jwt_signing_keys")
            generated = SigningKeys.generate("dev-" + secrets.token_hex(4))
            self.jwt_signing_keys = SecretStr(generated.to_config())
            self.jwt_active_key_id = generated.active_kid
        try:
            keys = SigningKeys.from_config(
                self.jwt_signing_keys.get_secret_value(), self.jwt_active_key_id
            )
        except ValueError as exc:
            raise ConfigurationError(f"TWOFA_JWT_SIGNING_KEYS: {exc}") from None
        self.jwt_active_key_id = keys.active_kid
        if self.env is Environment.production:
            seeds = self.jwt_signing_keys.get_secret_value()
            refuse_development_keys(
                "TWOFA_JWT_SIGNING_KEYS", parse_named_keys(seeds, "TWOFA_JWT_SIGNING_KEYS", 32)
            )

    def _check_event_keys(self) -> None:
        """The event signing ring (the relay) and the verify ring (every consumer)."""
        production = self.env is Environment.production
        if self.event_signing_keys is None and self.event_verify_keys is None:
            if production:
                raise ConfigurationError(
                    "TWOFA_EVENT_SIGNING_KEYS (the relay) or TWOFA_EVENT_VERIFY_KEYS (every"
                    " consumer) is required in production"
                )
            self._throwaway("event_signing_keys")
            self.event_signing_keys = SecretStr(SigningKeys.generate(_dev_kid()).to_config())
        if self.event_signing_keys is not None:
            self.event_signing_active_key_id = parse_signing_ring(
                "TWOFA_EVENT_SIGNING_KEYS",
                self.event_signing_keys.get_secret_value(),
                self.event_signing_active_key_id,
                production=production,
            ).active_kid
        if self.event_verify_keys is not None:
            ring = parse_named_keys(self.event_verify_keys, "TWOFA_EVENT_VERIFY_KEYS", 32)
            if not ring:
                raise ConfigurationError("TWOFA_EVENT_VERIFY_KEYS holds no key")
            if production:
                refuse_development_keys("TWOFA_EVENT_VERIFY_KEYS", ring)

    def event_signing_ring(self) -> SigningKeys:
        """The keys the relay signs integration events with."""
        if self.event_signing_keys is None:
            raise ConfigurationError(
                "TWOFA_EVENT_SIGNING_KEYS is not set: this process cannot sign events"
            )
        return SigningKeys.from_config(
            self.event_signing_keys.get_secret_value(), self.event_signing_active_key_id
        )

    def event_verify_ring(self) -> dict[str, Ed25519PublicKey]:
        """Public keys a consumer checks events with: ``TWOFA_EVENT_VERIFY_KEYS``; in
        development only, the public half of the signing keys when it has none."""
        if self.event_verify_keys is None:
            if self.env is Environment.production:
                raise ConfigurationError(
                    "TWOFA_EVENT_VERIFY_KEYS is required in production: every consumer checks"
                    " each event's signature with it"
                )
            return self.event_signing_ring().public_keys()
        raw = parse_named_keys(self.event_verify_keys, "TWOFA_EVENT_VERIFY_KEYS", 32)
        return {kid: Ed25519PublicKey.from_public_bytes(key) for kid, key in raw.items()}

    def _check_server_key(self, name: str) -> None:
        value: SecretStr | None = getattr(self, name)
        if value is None:
            self._throwaway(name)
            setattr(self, name, SecretStr(new_key()))
            return
        try:
            key = base64.b64decode(value.get_secret_value(), validate=True)
        except ValueError:
            raise ConfigurationError(f"TWOFA_{name.upper()} is not valid base64") from None
        if len(key) < 32 or len(set(key)) < 8:
            raise ConfigurationError(f"TWOFA_{name.upper()} must be at least 32 random bytes")
        if self.env is Environment.production and key.startswith(DEVELOPMENT_KEY_MARK):
            raise ConfigurationError(
                f"TWOFA_{name.upper()} is a development key (make run's), refused in production"
            )

    def server_key(self, name: str) -> bytes:
        """The bytes of ``recovery_code_key`` or ``device_token_key``."""
        value: SecretStr | None = getattr(self, name)
        assert value is not None  # set by the validator
        return base64.b64decode(value.get_secret_value())

    def signing_keys(self) -> SigningKeys:
        """The private signing keys (only the auth service needs them)."""
        if self.jwt_signing_keys is None:
            raise ConfigurationError("TWOFA_JWT_SIGNING_KEYS is not set: this process cannot sign")
        return SigningKeys.from_config(
            self.jwt_signing_keys.get_secret_value(), self.jwt_active_key_id
        )

    def verify_keys(self) -> dict[str, Ed25519PublicKey]:
        """Public keys that verify access tokens: ``TWOFA_JWT_VERIFY_KEYS``, else the
        public half of the signing keys."""
        if self.jwt_verify_keys is None:
            return self.signing_keys().public_keys()
        keys: dict[str, Ed25519PublicKey] = {}
        for kid, raw in parse_named_keys(self.jwt_verify_keys, "TWOFA_JWT_VERIFY_KEYS", 32).items():
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        return keys

    @property
    def registration_open(self) -> bool:
        """Open self-registration: on by default in development only."""
        if self.open_registration is not None:
            return self.open_registration
        return self.env is Environment.development

    @classmethod
    def load(cls) -> Settings:
        """Read the environment; ``ConfigurationError`` names what is wrong (never a value)."""
        try:
            return cls()
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = "_".join(str(part) for part in error["loc"]).upper()
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"TWOFA_{where}: {message}" if where else message)
            raise ConfigurationError("; ".join(problems)) from None

    @property
    def fetch_max_wait_ms(self) -> int:
        """Consumer fetch wait: low in development (Tansu), Kafka's usual in production."""
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        return 10 if self.env is Environment.development else 500

    def group(self, name: str) -> str:
        """The consumer group id of one of twofa's consumers."""
        return f"{self.kafka_group_prefix}.{name}"

    @property
    def dlq_topic(self) -> str:
        return self.kafka_topic + ".dlq"

    def key_ring(self) -> dict[str, bytes]:
        assert self.encryption_keys is not None  # set by the validator
        return parse_key_ring(self.encryption_keys.get_secret_value())

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigurationError("TWOFA_DATABASE_URL is not set")
        return self.database_url

    def require_migration_url(self) -> str:
        return self.migration_database_url or self.require_database_url()

    def service_broker(self) -> str | None:
        """The bootstrap servers a service consumes from; ``None`` only when it was told
        to run without one (``TWOFA_WITHOUT_BROKER``)."""
        if self.kafka_bootstrap_servers and self.without_broker:
            raise ConfigurationError(
                "TWOFA_KAFKA_BOOTSTRAP_SERVERS and TWOFA_WITHOUT_BROKER are both set: choose one"
            )
        if self.kafka_bootstrap_servers or self.without_broker:
            return self.kafka_bootstrap_servers
        if self.env is Environment.production:
            raise ConfigurationError(
                "TWOFA_KAFKA_BOOTSTRAP_SERVERS is required in production: without a broker"
                " no service learns revoked sessions and audit ingests nothing"
            )
        raise ConfigurationError(
            "TWOFA_KAFKA_BOOTSTRAP_SERVERS is not set: a service without a broker learns no"
            " revoked session and audit ingests nothing (TWOFA_WITHOUT_BROKER=true runs one"
            " anyway, for tests; never in production)"
        )

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigurationError("TWOFA_KAFKA_BOOTSTRAP_SERVERS is not set")
        return self.kafka_bootstrap_servers
