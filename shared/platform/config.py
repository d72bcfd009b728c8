"""Configuration from the environment (prefix ``TWOFA_``), one ``Settings`` for every process.

Which keys a process holds depends on the process (``KEY_HOLDERS``): the ``twofa``
command loads ``Settings.load(process=...)``, and then a key the process needs is
required in production (in development a missing one is replaced by a throwaway key,
and the log says so), while a secret key it does not need is refused in production
(ignored, with a warning, in development). ``Settings(**values)`` without a process,
as tests build it, checks every key as one process holding them all would.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.platform.key_holders import KEY_HOLDERS, KeyUse, Process
from shared.security.crypto import DEVELOPMENT_KEY_MARK, new_key
from shared.security.keys import SigningKeys
from shared.security.snapshot_mac import SnapshotKeys

__all__ = [
    "ConfigurationError",
    "Environment",
    "KafkaSaslMechanism",
    "KafkaSecurityProtocol",
    "Settings",
    "parse_key_ring",
    "parse_named_keys",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "twofa.events.v1"


class ConfigurationError(ValueError):
    """The configuration cannot run safely (missing or placeholder secrets in production)."""


class Environment(StrEnum):
    development = "development"
    production = "production"


class KafkaSecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_sasl(self) -> bool:
        return self.name.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.name.endswith("SSL")


class KafkaSaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


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


# The process ``Settings.load`` reads for: the validator decides its keys by it.
_LOADING_FOR: ContextVar[Process | None] = ContextVar("twofa_settings_for", default=None)


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
    # Which process these settings are for (``load(process=...)``, never the environment).
    _process: Process | None = PrivateAttr(default=None)

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
    # How the clients reach the brokers (every twofa process; the same names as Kafka's).
    kafka_security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = Field(default=None, min_length=1, max_length=200)
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(default=None, min_length=1, max_length=1000)
    kafka_ssl_certfile: str | None = Field(default=None, min_length=1, max_length=1000)
    kafka_ssl_keyfile: str | None = Field(default=None, min_length=1, max_length=1000)
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
    # HMAC-SHA256 keys of aggregate snapshots (auth and enrolment): kid:base64(32 bytes),...
    snapshot_keys: Annotated[SecretStr | None, NoDecode] = None
    snapshot_active_key_id: str | None = None

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
        self._process = _LOADING_FOR.get()
        if self._process is None:  # one process holding every key: tests, old callers
            self._check_encryption_keys()
            self._check_signing_keys()
            self._check_snapshot_keys()
            for name in ("recovery_code_key", "device_token_key"):
                self._check_server_key(name)
            self._check_event_keys()
        else:
            self._check_process_keys(self._process)
        if self.without_broker and self.env is Environment.production:
            raise ConfigurationError(
                "TWOFA_WITHOUT_BROKER cannot be set in production: a service without a broker"
                " learns no revoked session and audit ingests nothing"
            )
        self._check_kafka_security()
        if self.database_pool_min > self.database_pool_max:
            raise ConfigurationError("TWOFA_DATABASE_POOL_MIN exceeds TWOFA_DATABASE_POOL_MAX")
        return self

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        sasl = (self.kafka_sasl_mechanism, self.kafka_sasl_username, self.kafka_sasl_password)
        # (A SASL protocol's own three settings are checked where a client is made,
        # shared/messaging/kafka.py: migrate and the CLI read the same shared settings.)
        if not protocol.uses_sasl and any(v is not None for v in sasl):
            raise ConfigurationError(
                "TWOFA_KAFKA_SASL_* are set but TWOFA_KAFKA_SECURITY_PROTOCOL is"
                f" {protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not protocol.uses_tls and any(v is not None for v in tls):
            raise ConfigurationError(
                f"TWOFA_KAFKA_SSL_* are set but TWOFA_KAFKA_SECURITY_PROTOCOL is {protocol}:"
                " use SSL or SASL_SSL"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ConfigurationError(
                "TWOFA_KAFKA_SSL_CERTFILE and TWOFA_KAFKA_SSL_KEYFILE go together"
                " (the client's certificate and its private key)"
            )
        if self.env is not Environment.production:
            return
        password = self.kafka_sasl_password
        if password is not None and (
            "REPLACE_ME" in password.get_secret_value() or len(password.get_secret_value()) < 16
        ):
            raise ConfigurationError(
                "TWOFA_KAFKA_SASL_PASSWORD is a placeholder or shorter than 16 characters,"
                " refused in production"
            )
        if not self.kafka_bootstrap_servers:
            return  # a process that reaches no broker (migrate, accounts)
        if protocol is KafkaSecurityProtocol.PLAINTEXT:
            raise ConfigurationError(
                "TWOFA_KAFKA_SECURITY_PROTOCOL=PLAINTEXT is refused in production: anyone who"
                " reaches the broker could read and write the topic as twofa (use SASL_SSL,"
                " SASL_PLAINTEXT on a private network, or SSL with client certificates)"
            )
        if protocol is KafkaSecurityProtocol.SSL and self.kafka_ssl_certfile is None:
            raise ConfigurationError(
                "TWOFA_KAFKA_SECURITY_PROTOCOL=SSL without TWOFA_KAFKA_SSL_CERTFILE does not"
                " authenticate twofa to the broker: refused in production"
            )
        if (
            self.kafka_sasl_mechanism is KafkaSaslMechanism.PLAIN
            and protocol is KafkaSecurityProtocol.SASL_PLAINTEXT
        ):
            raise ConfigurationError(
                "TWOFA_KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password in"
                " clear: refused in production (use SCRAM-SHA-512, or SASL_SSL)"
            )

    def _check_process_keys(self, process: str) -> None:
        """Each key ``process`` holds is checked; any other secret key is refused."""
        for setting, use in KEY_HOLDERS.items():
            check = self._KEY_CHECKS.get(setting)
            if check is None or setting not in type(self).model_fields:
                continue  # a key setting not built yet
            if process in use.holders:
                check(self)
            elif use.secret and getattr(self, setting) is not None:
                self._refuse_key(process, setting, use)

    def _refuse_key(self, process: str, setting: str, use: KeyUse) -> None:
        variable = f"TWOFA_{setting.upper()}"
        if self.env is Environment.production:
            raise ConfigurationError(
                f"{variable} must not be given to the {process} process: it does not use it,"
                " and a process holds only the keys it needs"
            )
        log.warning("%s is not for the %s process: ignored", variable, process)
        verifies = process in KEY_HOLDERS["jwt_verify_keys"].holders
        if setting == "jwt_signing_keys" and verifies and self.jwt_verify_keys is None:
            self._keep_public_halves()  # development: verify what the ring it was given signs
        for name in (setting, *use.companions):
            setattr(self, name, None)

    def _keep_public_halves(self) -> None:
        assert self.jwt_signing_keys is not None
        try:
            keys = SigningKeys.from_config(
                self.jwt_signing_keys.get_secret_value(), self.jwt_active_key_id
            )
        except ValueError as exc:
            raise ConfigurationError(f"TWOFA_JWT_SIGNING_KEYS: {exc}") from None
        self.jwt_verify_keys = keys.public_config()

    def _check_jwt_signing_keys(self) -> None:
        if self.jwt_signing_keys is None:
            self._throwaway("jwt_signing_keys")
            generated = SigningKeys.generate("dev-" + secrets.token_hex(4))
            self.jwt_signing_keys = SecretStr(generated.to_config())
            self.jwt_active_key_id = generated.active_kid
        self._check_signing_keys()

    def _check_jwt_verify_keys(self) -> None:
        if self.jwt_verify_keys is None:
            self._throwaway("jwt_verify_keys")
            self.jwt_verify_keys = SigningKeys.generate(
                "dev-" + secrets.token_hex(4)
            ).public_config()
        self.verify_keys()
        if self.env is Environment.production:
            refuse_development_keys(
                "TWOFA_JWT_VERIFY_KEYS",
                parse_named_keys(self.jwt_verify_keys, "TWOFA_JWT_VERIFY_KEYS", 32),
            )

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

    def _check_snapshot_keys(self) -> None:
        """The snapshot MAC ring: a throwaway in development, required in production."""
        if self.snapshot_keys is None:
            self._throwaway("snapshot_keys")
            kid = "dev-" + secrets.token_hex(4)
            self.snapshot_keys, self.snapshot_active_key_id = SecretStr(f"{kid}:{new_key()}"), kid
        if self.env is Environment.production:
            refuse_development_keys("TWOFA_SNAPSHOT_KEYS", self._snapshot_ring())
        self.snapshot_active_key_id = self.snapshot_key_ring().active

    def _snapshot_ring(self) -> dict[str, bytes]:
        assert self.snapshot_keys is not None  # set by the validator
        return parse_named_keys(self.snapshot_keys.get_secret_value(), "TWOFA_SNAPSHOT_KEYS", 32)

    def snapshot_key_ring(self) -> SnapshotKeys:
        """The keys that sign and check aggregate snapshots (``TWOFA_SNAPSHOT_KEYS``)."""
        ring = self._snapshot_ring()
        if not ring:
            raise ConfigurationError("TWOFA_SNAPSHOT_KEYS holds no key")
        active = self.snapshot_active_key_id
        if active is None and len(ring) == 1:
            active = next(iter(ring))
        if active is None:
            raise ConfigurationError(
                "TWOFA_SNAPSHOT_ACTIVE_KEY_ID must name one of the keys of TWOFA_SNAPSHOT_KEYS"
            )
        if active not in ring:
            raise ConfigurationError(f"TWOFA_SNAPSHOT_ACTIVE_KEY_ID {active!r} is not a key id")
        return SnapshotKeys(ring, active)

    def _check_event_keys(self) -> None:
        """The event signing ring (the relay) and the verify ring (every consumer), for
        settings that hold every key (no process named)."""
        no_ring = self.event_signing_keys is None and self.event_verify_keys is None
        if no_ring and self.env is Environment.production:
            raise ConfigurationError(
                "TWOFA_EVENT_SIGNING_KEYS (the relay) or TWOFA_EVENT_VERIFY_KEYS (every"
                " consumer) is required in production"
            )
        if self.event_signing_keys is not None or self.event_verify_keys is None:
            self._check_event_signing_keys()
        if self.event_verify_keys is not None:
            self._check_event_verify_keys()

    def _check_event_signing_keys(self) -> None:
        """The relay's ring: a throwaway in development, required in production."""
        if self.event_signing_keys is None:
            self._throwaway("event_signing_keys")
            self.event_signing_keys = SecretStr(SigningKeys.generate(_dev_kid()).to_config())
        self.event_signing_active_key_id = parse_signing_ring(
            "TWOFA_EVENT_SIGNING_KEYS",
            self.event_signing_keys.get_secret_value(),
            self.event_signing_active_key_id,
            production=self.env is Environment.production,
        ).active_kid

    def _check_event_verify_keys(self) -> None:
        """A consumer's ring of public keys: required in production (in development a
        throwaway, which verifies nothing the relay signs: the log says so)."""
        if self.event_verify_keys is None:
            self._throwaway("event_verify_keys")
            self.event_verify_keys = SigningKeys.generate(_dev_kid()).public_config()
        ring = parse_named_keys(self.event_verify_keys, "TWOFA_EVENT_VERIFY_KEYS", 32)
        if not ring:
            raise ConfigurationError("TWOFA_EVENT_VERIFY_KEYS holds no key")
        if self.env is Environment.production:
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

    # How each key setting of KEY_HOLDERS is checked (and, in development, invented).
    _KEY_CHECKS: ClassVar[dict[str, Callable[[Settings], None]]] = {
        "encryption_keys": lambda s: s._check_encryption_keys(),
        "jwt_signing_keys": lambda s: s._check_jwt_signing_keys(),
        "jwt_verify_keys": lambda s: s._check_jwt_verify_keys(),
        "recovery_code_key": lambda s: s._check_server_key("recovery_code_key"),
        "device_token_key": lambda s: s._check_server_key("device_token_key"),
        "snapshot_keys": lambda s: s._check_snapshot_keys(),
        "event_signing_keys": lambda s: s._check_event_signing_keys(),
        "event_verify_keys": lambda s: s._check_event_verify_keys(),
    }

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
    def load(cls, process: Process | None = None) -> Settings:
        """Read the environment for ``process`` (which decides the keys it must and must
        not hold); ``ConfigurationError`` names what is wrong (never a value)."""
        loading = _LOADING_FOR.set(process)
        try:
            return cls()
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = "_".join(str(part) for part in error["loc"]).upper()
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"TWOFA_{where}: {message}" if where else message)
            raise ConfigurationError("; ".join(problems)) from None
        finally:
            _LOADING_FOR.reset(loading)

    @property
    def process(self) -> Process | None:
        """The process these settings were loaded for; ``None``: one holding every key."""
        return self._process

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
