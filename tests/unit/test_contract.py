"""The public contract: every domain event is mapped on purpose, and no secret leaves."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from shared.eventstore.envelope import EventMetadata, RecordedEvent
from shared.eventstore.registry import REGISTRY
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.integration import (
    IntegrationEvent,
    IntegrationMap,
    MalformedEventError,
    Publish,
    UnmappedEventError,
)
from tests.support.samples import SECRET_MARKERS, sample_event, secret_strings

SECRET_FIELDS = set(SECRET_MARKERS)

# The names the design promises on twofa.events.v1.
DESIGN_EVENT_NAMES = {
    "account.registered",
    "account.password_changed",
    "account.email_changed",
    "login.succeeded",
    "login.failed",
    "twofa.enrolment_started",
    "twofa.enabled",
    "twofa.otp_verified",
    "twofa.otp_failed",
    "twofa.recovery_code_used",
    "twofa.recovery_codes_regenerated",
    "twofa.disabled",
    "twofa.reset_requested",
    "twofa.reset_approved",
    "twofa.reset_cancelled",
    "twofa.reset_completed",
    "account.locked",
}


def recorded(type_name: str, stream: str = "account-0d6f4b9e") -> RecordedEvent:
    return RecordedEvent(
        position=17,
        transaction_id=901,
        stream_id=stream,
        stream_version=3,
        event_id=uuid.uuid4(),
        event=sample_event(type_name),
        metadata=EventMetadata(actor="account:0d6f4b9e", causation_id=uuid.uuid4()),
        recorded_at=datetime.now(UTC),
    )


def test_every_domain_event_type_has_an_explicit_mapping() -> None:
    assert set(REGISTRY.types()) - PUBLIC_EVENTS.mapped_types() == set()
    assert PUBLIC_EVENTS.mapped_types() - set(REGISTRY.types()) == set()


def test_every_name_the_design_promises_is_published() -> None:
    assert PUBLIC_EVENTS.public_types() >= DESIGN_EVENT_NAMES


@pytest.mark.parametrize("type_name", sorted(REGISTRY.types()))
def test_published_fields_exist_and_none_is_secret(type_name: str) -> None:
    rule = PUBLIC_EVENTS._mappings[type_name]
    if rule is None:
        return
    fields = {f.name for f in dataclasses.fields(REGISTRY.class_of(type_name))}
    assert set(rule.fields) <= fields
    assert not set(rule.fields) & SECRET_FIELDS


@pytest.mark.parametrize("type_name", sorted(REGISTRY.types()))
def test_no_secret_reaches_the_wire(type_name: str) -> None:
    public = PUBLIC_EVENTS.to_integration(recorded(type_name))
    if public is None:
        return
    wire = public.body() + b"".join(k.encode() + v for k, v in public.headers())
    for secret in secret_strings():
        assert secret.encode() not in wire, f"{type_name} leaks {secret}"


def test_an_unmapped_type_is_an_error_not_a_silent_publish() -> None:
    partial = IntegrationMap({"account.registered": Publish("account.registered", ("email",))})
    with pytest.raises(UnmappedEventError):
        partial.to_integration(recorded("account.password_changed"))


def test_cloudevents_headers_key_and_body() -> None:
    event = recorded("account.registered", stream="account-42")
    public = PUBLIC_EVENTS.to_integration(event)
    assert public is not None
    headers = dict(public.headers())
    assert headers["ce_id"] == str(event.event_id).encode()
    assert headers["ce_type"] == b"account.registered"
    assert headers["ce_source"] == b"/twofa/account"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_subject"] == b"42"
    assert headers["content-type"] == b"application/json"
    assert datetime.fromisoformat(headers["ce_time"].decode()) == event.metadata.occurred_at
    assert public.key == b"42"
    assert orjson.loads(public.body()) == {"username": "sample", "email": "sample"}


def test_twofactor_streams_key_by_the_same_account_id() -> None:
    public = PUBLIC_EVENTS.to_integration(recorded("twofa.enabled", stream="twofactor-42"))
    assert public is not None and public.key == b"42"


def test_integration_event_round_trips_through_kafka_form() -> None:
    public = PUBLIC_EVENTS.to_integration(recorded("login.failed"))
    assert public is not None
    assert IntegrationEvent.from_kafka(public.headers(), public.body()) == public


def _headers(**drop_or_replace: bytes | None) -> list[tuple[str, bytes]]:
    public = PUBLIC_EVENTS.to_integration(recorded("login.failed"))
    assert public is not None
    out = []
    for k, v in public.headers():
        if k in drop_or_replace:
            replacement = drop_or_replace[k]
            if replacement is not None:
                out.append((k, replacement))
        else:
            out.append((k, v))
    return out


GOOD_BODY = b'{"reason":"password","consecutive_failures":1}'


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([], GOOD_BODY),  # no headers at all
        (_headers(ce_id=None), GOOD_BODY),  # missing id
        (_headers(ce_type=None), GOOD_BODY),  # missing type
        (_headers(ce_id=b"not-a-uuid"), GOOD_BODY),  # bad id
        (_headers(ce_time=b"yesterday"), GOOD_BODY),  # bad time
        (_headers(ce_specversion=b"0.3"), GOOD_BODY),  # other CloudEvents version
        (_headers(ce_type=b"\xff\xfe"), GOOD_BODY),  # not UTF-8
        (_headers(), None),  # tombstone
        (_headers(), b"{not json"),  # broken JSON
        (_headers(), b"[1, 2]"),  # JSON but not an object
        (_headers(), b"\x00\x01\x02"),  # binary garbage
    ],
)
def test_malformed_records_are_refused(
    headers: list[tuple[str, bytes]], body: bytes | None
) -> None:
    with pytest.raises(MalformedEventError):
        IntegrationEvent.from_kafka(headers, body)
