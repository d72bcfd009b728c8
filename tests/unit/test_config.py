"""Settings: development fills gaps with throwaway keys, production refuses them."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.platform.config import ConfigurationError, Settings
from shared.platform.key_holders import KEY_HOLDERS, PROCESSES, Process, key_variables
from shared.security.crypto import new_key
from shared.security.keys import SigningKeys
from tests.support.production import named, production_values


def key() -> str:
    return new_key()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)


def test_development_generates_a_throwaway_key_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = Settings.load()
    assert settings.encryption_active_key_id is not None
    assert settings.encryption_active_key_id.startswith("dev-")
    assert len(settings.key_ring()[settings.encryption_active_key_id]) == 32
    assert "throwaway key" in caplog.text
    assert settings.key_ring()[settings.encryption_active_key_id].hex() not in caplog.text


def test_production_refuses_to_start_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_ENV", "production")
    with pytest.raises(ConfigurationError, match="TWOFA_ENCRYPTION_KEYS"):
        Settings.load()


def test_production_refuses_placeholder_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_ENV", "production")
    zeros = base64.b64encode(bytes(32)).decode()
    monkeypatch.setenv("TWOFA_ENCRYPTION_KEYS", f"k1:{zeros}")
    with pytest.raises(ConfigurationError, match="placeholder"):
        Settings.load()


def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_ENV", "production")
    monkeypatch.setenv("TWOFA_ENCRYPTION_KEYS", f"2026-01:{key()},2026-06:{key()}")
    monkeypatch.setenv("TWOFA_ENCRYPTION_ACTIVE_KEY_ID", "2026-06")
    monkeypatch.setenv("TWOFA_JWT_SIGNING_KEYS", f"sig-2026:{key()}")
    monkeypatch.setenv("TWOFA_RECOVERY_CODE_KEY", key())
    monkeypatch.setenv("TWOFA_DEVICE_TOKEN_KEY", key())
    monkeypatch.setenv("TWOFA_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TWOFA_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TWOFA_KAFKA_SASL_USERNAME", "twofa-auth")
    monkeypatch.setenv("TWOFA_KAFKA_SASL_PASSWORD", secrets.token_urlsafe(24))
    monkeypatch.setenv("TWOFA_SNAPSHOT_KEYS", f"snap-2026:{key()}")
    events = SigningKeys.generate("events-2026")
    monkeypatch.setenv("TWOFA_EVENT_SIGNING_KEYS", events.to_config())
    monkeypatch.setenv("TWOFA_EVENT_VERIFY_KEYS", events.public_config())


REQUIRED_IN_PRODUCTION = [
    "TWOFA_ENCRYPTION_KEYS",
    "TWOFA_JWT_SIGNING_KEYS",
    "TWOFA_RECOVERY_CODE_KEY",
    "TWOFA_DEVICE_TOKEN_KEY",
    "TWOFA_SNAPSHOT_KEYS",
]


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_names_each_missing_key(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    production(monkeypatch)
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        Settings.load()


def test_production_refuses_short_server_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)
    short = base64.b64encode(secrets.token_bytes(16)).decode()
    monkeypatch.setenv("TWOFA_RECOVERY_CODE_KEY", short)
    with pytest.raises(ConfigurationError, match="at least 32") as caught:
        Settings.load()
    assert short not in str(caught.value)


def test_registration_is_open_in_development_only_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings.load().registration_open
    production(monkeypatch)
    assert not Settings.load().registration_open
    monkeypatch.setenv("TWOFA_OPEN_REGISTRATION", "true")
    assert Settings.load().registration_open


def test_production_accepts_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)
    settings = Settings.load()
    assert set(settings.key_ring()) == {"2026-01", "2026-06"}
    assert settings.fetch_max_wait_ms == 500


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ("k1", None, "kid:base64key"),  # no separator
        ("k1:not base64!", None, "base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", None, "32 bytes"),
        ("k1:{k},k1:{k}", None, "twice"),
        ("k1:{k},k2:{k}", None, "must name one"),
        ("k1:{k}", "k9", "is not a key id"),
        (" , ", None, "holds no key"),
    ],
)
def test_bad_key_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, keys: str, active: str | None, message: str
) -> None:
    monkeypatch.setenv("TWOFA_ENCRYPTION_KEYS", keys.replace("{k}", key()))
    if active:
        monkeypatch.setenv("TWOFA_ENCRYPTION_ACTIVE_KEY_ID", active)
    with pytest.raises(ConfigurationError, match=message):
        Settings.load()


def test_fetch_wait_is_low_in_development_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings.load().fetch_max_wait_ms == 10
    monkeypatch.setenv("TWOFA_KAFKA_FETCH_MAX_WAIT_MS", "250")
    assert Settings.load().fetch_max_wait_ms == 250


def test_missing_servers_are_reported_clearly() -> None:
    settings = Settings.load()
    with pytest.raises(ConfigurationError, match="TWOFA_DATABASE_URL"):
        settings.require_database_url()
    with pytest.raises(ConfigurationError, match="TWOFA_KAFKA_BOOTSTRAP_SERVERS"):
        settings.require_kafka()


SERVICES = ["auth", "enrolment", "audit"]


def create_app(service: str, settings: Settings) -> object:
    from services.audit.main import create_app as audit
    from services.auth.main import create_app as auth
    from services.enrolment.main import create_app as enrolment

    return {"auth": auth, "enrolment": enrolment, "audit": audit}[service](settings)


@pytest.mark.parametrize("service", SERVICES)
def test_production_refuses_a_service_without_a_broker(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    production(monkeypatch)
    with pytest.raises(ConfigurationError, match="TWOFA_KAFKA_BOOTSTRAP_SERVERS is required"):
        create_app(service, Settings.load())


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_without_a_broker_runs_only_when_told_by_name(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    with pytest.raises(ConfigurationError, match="TWOFA_WITHOUT_BROKER=true runs one anyway"):
        create_app(service, Settings.load())
    monkeypatch.setenv("TWOFA_WITHOUT_BROKER", "true")
    create_app(service, Settings.load())  # built; its lifespan starts no consumer
    monkeypatch.setenv("TWOFA_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with pytest.raises(ConfigurationError, match="both set: choose one"):
        create_app(service, Settings.load())


def test_production_refuses_to_run_without_a_broker_even_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    monkeypatch.setenv("TWOFA_WITHOUT_BROKER", "true")
    with pytest.raises(
        ConfigurationError, match="TWOFA_WITHOUT_BROKER cannot be set in production"
    ):
        Settings.load()


def test_production_with_a_broker_builds_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)
    monkeypatch.setenv("TWOFA_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = Settings.load()
    for service in SERVICES:
        create_app(service, settings)


def dev_env(tmp_path: Path) -> dict[str, str]:
    """What ``make run`` writes to ``.twofa/dev.env``."""
    from shared.devtools.keys import dev_keys

    return dev_keys(tmp_path)


@pytest.mark.parametrize(
    "setting",
    [
        "TWOFA_ENCRYPTION_KEYS",
        "TWOFA_JWT_SIGNING_KEYS",
        "TWOFA_RECOVERY_CODE_KEY",
        "TWOFA_DEVICE_TOKEN_KEY",
        "TWOFA_SNAPSHOT_KEYS",
        "TWOFA_EVENT_SIGNING_KEYS",
        "TWOFA_EVENT_VERIFY_KEYS",
    ],
)
def test_production_refuses_each_key_make_run_writes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    production(monkeypatch)
    written = dev_env(tmp_path)
    monkeypatch.setenv(setting, written[setting])
    if setting in ("TWOFA_ENCRYPTION_KEYS", "TWOFA_SNAPSHOT_KEYS"):
        active = setting.replace("_KEYS", "_ACTIVE_KEY_ID")
        monkeypatch.setenv(active, written[active])
    with pytest.raises(ConfigurationError, match=f"^{setting}.*refused in production"):
        Settings.load()
    if setting == "TWOFA_SNAPSHOT_KEYS":  # the mark alone refuses it, under any key id
        monkeypatch.setenv(setting, written[setting].replace("local-1:", "snap-1:"))
        monkeypatch.setenv("TWOFA_SNAPSHOT_ACTIVE_KEY_ID", "snap-1")
        with pytest.raises(ConfigurationError, match="key 'snap-1' is a placeholder or devel"):
            Settings.load()


def test_make_run_keys_still_serve_development(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in dev_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = Settings.load()
    assert settings.key_ring() and len(settings.server_key("recovery_code_key")) > 32


@pytest.mark.parametrize(
    ("kid", "why"),
    [("dev-1a2b", "development key id"), ("local-1", "development key id")],
)
def test_production_checks_every_signing_key_not_only_the_active_one(
    monkeypatch: pytest.MonkeyPatch, kid: str, why: str
) -> None:
    production(monkeypatch)
    old = named(kid, secrets.token_bytes(32))
    monkeypatch.setenv("TWOFA_JWT_SIGNING_KEYS", f"{old},sig-2026:{key()}")
    monkeypatch.setenv("TWOFA_JWT_ACTIVE_KEY_ID", "sig-2026")
    with pytest.raises(
        ConfigurationError, match=f"TWOFA_JWT_SIGNING_KEYS: key id '{kid}' is a {why}"
    ):
        Settings.load()


# Public-key rings production refuses, and what the error says.
BAD_RINGS: list[tuple[Callable[[], str], str]] = [
    (
        lambda: named("local-1", secrets.token_bytes(32)),
        "key id 'local-1' is a development key id",
    ),
    (lambda: named("dev-9", secrets.token_bytes(32)), "key id 'dev-9' is a development key id"),
    (lambda: named("k1", bytes(32)), "key 'k1' is a placeholder"),
    (lambda: named("k1", secrets.token_bytes(16)), "key 'k1' must be 32 bytes"),
    (
        lambda: ",".join(named(k, secrets.token_bytes(32)) for k in ("k1", "local-2")),
        "key id 'local-2' is a development key id",
    ),
]


@pytest.mark.parametrize(("ring", "message"), BAD_RINGS)
def test_production_checks_every_verify_key(
    monkeypatch: pytest.MonkeyPatch, ring: Callable[[], str], message: str
) -> None:
    production(monkeypatch)
    monkeypatch.delenv("TWOFA_JWT_SIGNING_KEYS")
    monkeypatch.setenv("TWOFA_JWT_VERIFY_KEYS", ring())
    with pytest.raises(ConfigurationError, match=f"TWOFA_JWT_VERIFY_KEYS: {message}"):
        Settings.load()


def test_production_accepts_real_verify_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)
    monkeypatch.delenv("TWOFA_JWT_SIGNING_KEYS")
    monkeypatch.setenv("TWOFA_JWT_VERIFY_KEYS", named("sig-2026", secrets.token_bytes(32)))
    assert set(Settings.load().verify_keys()) == {"sig-2026"}


def test_production_checks_every_encryption_key_not_only_the_active_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    monkeypatch.setenv("TWOFA_ENCRYPTION_KEYS", f"local-1:{key()},2026-06:{key()}")
    with pytest.raises(ConfigurationError, match="TWOFA_ENCRYPTION_KEYS: key id 'local-1'"):
        Settings.load()


def test_snapshot_keys_a_throwaway_in_development_a_ring_that_rotates_in_production(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        throwaway = Settings.load().snapshot_key_ring()
    assert throwaway.active.startswith("dev-") and "TWOFA_SNAPSHOT_KEYS" in caplog.text
    production(monkeypatch)
    monkeypatch.setenv("TWOFA_SNAPSHOT_KEYS", f"snap-2026-01:{key()},snap-2026-06:{key()}")
    with pytest.raises(ConfigurationError, match="TWOFA_SNAPSHOT_ACTIVE_KEY_ID must name one"):
        Settings.load()
    monkeypatch.setenv("TWOFA_SNAPSHOT_ACTIVE_KEY_ID", "snap-2027")
    with pytest.raises(ConfigurationError, match="'snap-2027' is not a key id"):
        Settings.load()
    monkeypatch.setenv("TWOFA_SNAPSHOT_ACTIVE_KEY_ID", "snap-2026-06")
    assert Settings.load().snapshot_key_ring().active == "snap-2026-06"
    monkeypatch.setenv("TWOFA_SNAPSHOT_KEYS", " , ")
    with pytest.raises(ConfigurationError, match="TWOFA_SNAPSHOT_KEYS holds no key"):
        Settings.load()
    monkeypatch.setenv("TWOFA_SNAPSHOT_KEYS", f"snap-2026-06:{key()},local-1:{key()}")
    with pytest.raises(ConfigurationError, match="TWOFA_SNAPSHOT_KEYS: key id 'local-1'"):
        Settings.load()


# -- the keys of each process (KEY_HOLDERS) ---------------------------------------------


def checked_settings() -> list[str]:
    """The key settings that exist and are checked (KEY_HOLDERS may name future ones)."""
    return [
        name
        for name in KEY_HOLDERS
        if name in Settings.model_fields and name in Settings._KEY_CHECKS
    ]


def held(process: Process) -> list[str]:
    return [f"TWOFA_{n.upper()}" for n in checked_settings() if process in KEY_HOLDERS[n].holders]


def foreign(process: Process) -> list[str]:
    return [
        f"TWOFA_{n.upper()}"
        for n in checked_settings()
        if process not in KEY_HOLDERS[n].holders and KEY_HOLDERS[n].secret
    ]


def only_its_keys(monkeypatch: pytest.MonkeyPatch, process: Process) -> None:
    """Production, and exactly the keys ``process`` holds (with their active ids)."""
    monkeypatch.setenv("TWOFA_ENV", "production")
    values = production_values()
    for name in sorted(key_variables(process) & set(values)):
        monkeypatch.setenv(name, values[name])
    missing = {v for v in held(process) if v not in values}
    assert not missing, f"production_values() needs a line for {sorted(missing)}"


# Every (process, setting) pair the table implies, listed so each is its own case.
NEEDED = [(p, v) for p in PROCESSES for v in held(p)]
FORBIDDEN = [(p, v) for p in PROCESSES for v in foreign(p)]


def test_the_table_gives_audit_and_relay_no_secret_of_the_account_services() -> None:
    secrets_of_accounts = {
        "TWOFA_ENCRYPTION_KEYS",
        "TWOFA_JWT_SIGNING_KEYS",
        "TWOFA_RECOVERY_CODE_KEY",
        "TWOFA_DEVICE_TOKEN_KEY",
    }
    others: tuple[Process, ...] = ("audit", "relay", "migrate")
    for process in others:
        assert secrets_of_accounts <= set(foreign(process)), process
    assert set(held("audit")) <= {"TWOFA_JWT_VERIFY_KEYS", "TWOFA_EVENT_VERIFY_KEYS"}
    assert set(held("relay")) <= {"TWOFA_EVENT_SIGNING_KEYS"}
    assert held("migrate") == []


@pytest.mark.parametrize("process", PROCESSES)
def test_production_starts_each_process_with_exactly_its_keys(
    monkeypatch: pytest.MonkeyPatch, process: Process
) -> None:
    only_its_keys(monkeypatch, process)
    settings = Settings.load(process=process)
    assert settings.process == process
    for variable in foreign(process):
        assert getattr(settings, variable.removeprefix("TWOFA_").lower()) is None


@pytest.mark.parametrize(("process", "variable"), NEEDED)
def test_production_refuses_a_process_missing_a_key_it_needs(
    monkeypatch: pytest.MonkeyPatch, process: Process, variable: str
) -> None:
    only_its_keys(monkeypatch, process)
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigurationError, match=f"^{variable} is required in production"):
        Settings.load(process=process)


@pytest.mark.parametrize(("process", "variable"), FORBIDDEN)
def test_production_refuses_a_process_given_a_key_it_must_not_hold(
    monkeypatch: pytest.MonkeyPatch, process: Process, variable: str
) -> None:
    only_its_keys(monkeypatch, process)
    monkeypatch.setenv(variable, production_values()[variable])
    with pytest.raises(
        ConfigurationError, match=f"^{variable} must not be given to the {process} process"
    ) as refused:
        Settings.load(process=process)
    assert production_values()[variable] not in str(refused.value)


@pytest.mark.parametrize("process", PROCESSES)
def test_development_invents_throwaway_keys_only_for_what_the_process_needs(
    caplog: pytest.LogCaptureFixture, process: Process
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = Settings.load(process=process)
    warned = {v for v in (*held(process), *foreign(process)) if f"no {v} set" in caplog.text}
    assert warned == set(held(process))
    for variable in foreign(process):
        assert getattr(settings, variable.removeprefix("TWOFA_").lower()) is None


@pytest.mark.parametrize(("process", "variable"), FORBIDDEN)
def test_development_ignores_a_key_the_process_must_not_hold(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    process: Process,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, production_values()[variable])
    with caplog.at_level(logging.WARNING):
        settings = Settings.load(process=process)
    assert getattr(settings, variable.removeprefix("TWOFA_").lower()) is None
    assert f"{variable} is not for the {process} process: ignored" in caplog.text


def test_development_enrolment_given_signing_keys_verifies_with_their_public_halves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signing = SigningKeys.generate("local-1")
    monkeypatch.setenv("TWOFA_JWT_SIGNING_KEYS", signing.to_config())
    settings = Settings.load(process="enrolment")
    assert settings.jwt_signing_keys is None
    public = settings.verify_keys()["local-1"].public_bytes_raw()
    assert public == signing.public_keys()["local-1"].public_bytes_raw()


@pytest.mark.parametrize("process", PROCESSES)
def test_make_run_gives_each_process_only_its_keys(tmp_path: Path, process: Process) -> None:
    from shared.devtools.keys import dev_keys_for

    given = set(dev_keys_for(tmp_path, process))
    assert given <= key_variables(process)
    assert not given & set(foreign(process))
    assert set(held(process)) <= given


# Event signing (the relay) and verify (every consumer) keys ----------------------------


def test_make_run_writes_one_event_ring_that_its_consumers_verify_with(tmp_path: Path) -> None:
    written = dev_env(tmp_path)
    assert dev_env(tmp_path) == written  # made once, then read back
    ring = SigningKeys.from_config(written["TWOFA_EVENT_SIGNING_KEYS"], None)
    assert ring.active_kid == "local-1"
    assert written["TWOFA_EVENT_VERIFY_KEYS"] == ring.public_config()


def test_development_consumer_without_verify_keys_uses_the_signing_keys_public_half() -> None:
    ring = SigningKeys.generate("k1")
    settings = Settings(event_signing_keys=ring.to_config())
    [(kid, public)] = settings.event_verify_ring().items()
    assert kid == "k1"
    assert public.public_bytes_raw() == ring.public_keys()["k1"].public_bytes_raw()


def test_development_without_event_keys_gets_a_throwaway_ring(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = Settings.load()
    assert settings.event_signing_ring().active_kid.startswith("dev-")
    assert "TWOFA_EVENT_SIGNING_KEYS" in caplog.text


def test_production_needs_event_keys_and_a_consumer_needs_verify_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    verify = Settings.load().event_verify_keys
    monkeypatch.delenv("TWOFA_EVENT_VERIFY_KEYS")
    relay = Settings.load()  # the relay needs only its signing keys
    assert relay.event_signing_ring().active_kid == "events-2026"
    with pytest.raises(ConfigurationError, match="TWOFA_EVENT_VERIFY_KEYS is required"):
        relay.event_verify_ring()  # no falling back to the signing keys in production
    monkeypatch.delenv("TWOFA_EVENT_SIGNING_KEYS")
    with pytest.raises(ConfigurationError, match=r"TWOFA_EVENT_SIGNING_KEYS .* is required"):
        Settings.load()
    monkeypatch.setenv("TWOFA_EVENT_VERIFY_KEYS", str(verify))
    consumer = Settings.load()
    assert set(consumer.event_verify_ring()) == {"events-2026"}
    with pytest.raises(ConfigurationError, match="TWOFA_EVENT_SIGNING_KEYS is not set"):
        consumer.event_signing_ring()


@pytest.mark.parametrize("setting", ["TWOFA_EVENT_SIGNING_KEYS", "TWOFA_EVENT_VERIFY_KEYS"])
@pytest.mark.parametrize(("ring", "message"), BAD_RINGS)
def test_production_checks_every_event_key(
    monkeypatch: pytest.MonkeyPatch, setting: str, ring: Callable[[], str], message: str
) -> None:
    production(monkeypatch)
    value = ring()
    monkeypatch.setenv(setting, value)
    if setting == "TWOFA_EVENT_SIGNING_KEYS":
        monkeypatch.setenv("TWOFA_EVENT_SIGNING_ACTIVE_KEY_ID", value.partition(":")[0])
    message = message.replace("must be 32 bytes", "must be (a )?32")  # a seed, as the JWT's
    with pytest.raises(ConfigurationError, match=f"^{setting}: .*{message}"):
        Settings.load()
