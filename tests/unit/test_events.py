"""Domain events: orjson round trips, upcasting of old schema versions, the registry."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.domain.base import DomainEvent
from shared.eventstore.envelope import EventMetadata
from shared.eventstore.registry import REGISTRY, EventRegistry, UnknownEventTypeError
from tests.support.samples import sample_event


@pytest.mark.parametrize("type_name", sorted(REGISTRY.types()))
def test_every_domain_event_round_trips_through_json(type_name: str) -> None:
    event = sample_event(type_name)
    data = orjson.loads(REGISTRY.encode(event))
    assert REGISTRY.decode(type_name, event.schema_version, data) == event


def test_registry_refuses_unknown_types() -> None:
    with pytest.raises(UnknownEventTypeError):
        REGISTRY.decode("no.such_event", 1, {})


def test_a_type_name_can_be_registered_once() -> None:
    registry = EventRegistry()

    @dataclass(frozen=True, slots=True, kw_only=True)
    class First(DomainEvent):
        type = "thing.happened"

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Second(DomainEvent):
        type = "thing.happened"

    registry.register(First)
    with pytest.raises(ValueError, match="twice"):
        registry.register(Second)


def test_old_schema_versions_are_upcast_to_the_current_class() -> None:
    registry = EventRegistry()

    @registry.register
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Renamed(DomainEvent):
        type = "thing.renamed"
        schema_version = 3
        display_name: str
        changed_at: datetime

    @registry.upcaster("thing.renamed", 1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"name": data["title"], "changed_at": data["at"]}

    @registry.upcaster("thing.renamed", 2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {"display_name": data["name"], "changed_at": data["changed_at"]}

    old = registry.decode("thing.renamed", 1, {"title": "x", "at": "2026-01-02T03:04:05+00:00"})
    assert old == Renamed(display_name="x", changed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    current = registry.decode(
        "thing.renamed", 3, dataclasses.asdict(old) | {"changed_at": "2026-01-02T03:04:05+00:00"}
    )
    assert current == old


def test_missing_upcaster_is_an_error_not_a_guess() -> None:
    registry = EventRegistry()

    @registry.register
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Grown(DomainEvent):
        type = "thing.grown"
        schema_version = 2
        size: int

    with pytest.raises(UnknownEventTypeError, match="no upcaster"):
        registry.decode("thing.grown", 1, {"size": 1})


def test_metadata_round_trips() -> None:
    meta = EventMetadata(causation_id=uuid.uuid4(), actor="account:7")
    assert EventMetadata.from_dict(orjson.loads(meta.to_json())) == meta


# What the store already holds is read by these names and schema versions: renaming a
# class is free, changing one of these strands every stored event of that type.
STORED_TYPES = {
    "account.registered": 1,
    "account.password_changed": 1,
    "account.email_changed": 1,
    "account.role_granted": 1,
    "account.role_revoked": 1,
    "login.succeeded": 1,
    "login.failed": 1,
    "login.mfa_required": 1,
    "session.reauthenticated": 1,
    "session.started": 1,
    "session.refreshed": 1,
    "session.ended": 1,
    "session.revoked": 1,
    "username.claimed": 1,
    "twofa.enrolment_started": 1,
    "twofa.enabled": 1,
    "twofa.otp_verified": 1,
    "twofa.otp_failed": 1,
    "twofa.recovery_code_used": 1,
    "twofa.recovery_codes_regenerated": 1,
    "twofa.disabled": 1,
    "twofa.locked": 1,
    "twofa.reset_requested": 1,
    "twofa.reset_approved": 1,
    "twofa.reset_cancelled": 1,
    "twofa.reset_completed": 1,
}


def test_stored_type_names_and_versions_stay_readable() -> None:
    registered = {name: REGISTRY.class_of(name).schema_version for name in REGISTRY.types()}
    assert registered == STORED_TYPES


def test_the_mfa_challenge_keeps_its_stored_name() -> None:
    assert REGISTRY.class_of("login.mfa_required").__name__ == "MfaChallengeOpened"
