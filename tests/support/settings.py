"""Settings for one test: its own database, cheap argon2, fresh keys, its own topic."""

from __future__ import annotations

import uuid
from typing import Any

from shared.messaging.integration import IntegrationEvent
from shared.messaging.signing import EventSigner, SignedRecord
from shared.platform.config import Settings
from shared.security.crypto import new_key
from shared.security.keys import SigningKeys

# The event signing ring of the running test (tests/conftest.py makes one per test), so
# that its relay (tests/support/relay.py) and its consumers (settings_for) agree.
_event_keys = SigningKeys.generate("test-events")


def new_event_keys() -> SigningKeys:
    """A fresh event signing ring for the test about to run."""
    global _event_keys
    _event_keys = SigningKeys.generate("test-events")
    return _event_keys


def event_signer() -> EventSigner:
    """What signs this test's events: the relay's signer, and tests that produce by hand."""
    return EventSigner(_event_keys)


def signed(event: IntegrationEvent) -> SignedRecord:
    """``event`` as the relay would put it on Kafka in this test."""
    return event_signer().sign(event)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its database, cheap argon2, fresh keys shared by its apps."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "encryption_keys": f"k1:{new_key()}",
        "recovery_code_key": new_key(),
        "device_token_key": new_key(),
        "snapshot_keys": f"s1:{new_key()}",
    }
    values["event_signing_keys"] = _event_keys.to_config()
    values["jwt_signing_keys"] = SigningKeys.generate("test-key").to_config()
    values.update(overrides)
    return Settings(**values)


def without_broker(settings: Settings) -> Settings:
    """The same settings for a service told to run with no broker (no consumer at all)."""
    return settings.model_copy(update={"kafka_bootstrap_servers": None, "without_broker": True})


def with_kafka(kafka_bootstrap: str, topic: str) -> dict[str, Any]:
    """``settings_for`` overrides for a test's own topic and consumer groups."""
    return {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "kafka_topic": topic,
        "kafka_group_prefix": f"t{uuid.uuid4().hex[:8]}",
    }
