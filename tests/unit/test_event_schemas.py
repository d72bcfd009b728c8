"""The published contract's documents agree with the code: a schema per public event,
one AsyncAPI file, and every body and header set the relay builds validates against them.

The official AsyncAPI 3.0 meta-schema is in no PyPI package (only in npm's
@asyncapi/specs), so the AsyncAPI document's structure is checked here by hand. The event
schemas are checked as Draft 2020-12, the headers schemas as draft-07 (AsyncAPI's own
schema dialect is a superset of it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer, ConsumerRecord
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from shared.domain.base import DomainEvent
from shared.eventstore.envelope import EventMetadata, RecordedEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.streams import account_stream, twofactor_stream
from shared.messaging.consumer import ConsumerOptions, EventConsumer
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.integration import IntegrationEvent, Publish
from shared.messaging.signing import EventSigner, EventVerifier, RefusedEvent
from shared.security.keys import SigningKeys
from tests.support.samples import sample_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "shared" / "schemas"
ASYNCAPI = SCHEMAS / "asyncapi.yaml"
EVENTS_CHANNEL = "twofa.events.v1"
DLQ_CHANNEL = "twofa.events.v1.dlq"
DLQ_MESSAGE = "deadLetter"
_ASYNCAPI_URI = "urn:twofa:asyncapi"

Schema = dict[str, Any]


# Loading the documents (the integration test uses these too) ----------------------------


@functools.cache
def asyncapi() -> Schema:
    return cast(Schema, yaml.safe_load(ASYNCAPI.read_text()))


@functools.cache
def schema_files() -> dict[str, Schema]:
    """Every file under shared/schemas/events, by public type (its name less ``.json``)."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text())
        for path in sorted((SCHEMAS / "events").glob("*.json"))
    }


def payload_path(public_type: str) -> Path:
    """The file the AsyncAPI message of ``public_type`` names as its payload."""
    ref: str = asyncapi()["components"]["messages"][public_type]["payload"]["$ref"]
    return (ASYNCAPI.parent / ref).resolve()


@functools.cache
def payload_schema(public_type: str) -> Schema:
    return cast(Schema, json.loads(payload_path(public_type).read_text()))


@functools.cache
def body_validator(public_type: str) -> Draft202012Validator:
    return Draft202012Validator(
        payload_schema(public_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _doc_validator(pointer: str) -> Draft7Validator:
    # AsyncAPI's own schema dialect is a superset of draft-07.
    registry: Registry[Any] = Registry().with_resource(
        _ASYNCAPI_URI, DRAFT7.create_resource(asyncapi())
    )
    return Draft7Validator(
        {"$ref": f"{_ASYNCAPI_URI}#{pointer}"},
        registry=registry,
        format_checker=Draft7Validator.FORMAT_CHECKER,
    )


@functools.cache
def headers_validator(public_type: str) -> Draft7Validator:
    """The headers schema of the AsyncAPI message for ``public_type``."""
    return _doc_validator(f"/components/messages/{public_type}/headers")


def text_headers(pairs: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Kafka headers as the text the schemas describe; a header twice is an error."""
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate headers: {names}"
    return {name: value.decode() for name, value in pairs}


def errors(validator: Draft7Validator | Draft202012Validator, instance: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def stream_of(type_name: str, account_id: str) -> str:
    """The stream a domain event type is stored on."""
    if type_name.startswith("username."):
        return f"username-user{account_id[:8]}"
    if type_name.startswith("twofa."):
        return twofactor_stream(account_id)
    return account_stream(account_id)


def with_nulls(event: DomainEvent) -> DomainEvent | None:
    """``event`` with every optional field set to None, or None if it has none."""
    hints = typing.get_type_hints(type(event))
    optional = [
        f.name for f in dataclasses.fields(event) if type(None) in typing.get_args(hints[f.name])
    ]
    return dataclasses.replace(event, **dict.fromkeys(optional)) if optional else None


# Domain type -> its public form, for every type that is published at all.
RULES: dict[str, Publish] = {
    name: rule for name, rule in sorted(PUBLIC_EVENTS._mappings.items()) if rule is not None
}
PUBLISHED = list(RULES)
PUBLIC_TYPES = sorted(PUBLIC_EVENTS.public_types())


def sources_of(public_type: str) -> list[str]:
    """The domain event types published as ``public_type``."""
    return [name for name, rule in RULES.items() if rule.public_type == public_type]


def recorded(event: DomainEvent, *, full_metadata: bool = True) -> RecordedEvent:
    account = str(uuid.uuid4())
    metadata = (
        EventMetadata(actor=f"account:{account}", causation_id=uuid.uuid4())
        if full_metadata
        else EventMetadata()
    )
    return RecordedEvent(
        position=17,
        transaction_id=901,
        stream_id=stream_of(event.type, account),
        stream_version=3,
        event_id=uuid.uuid4(),
        event=event,
        metadata=metadata,
        recorded_at=datetime.now(UTC),
    )


# The documents match the contract ---------------------------------------------------


def test_every_public_type_has_a_schema_file_and_no_file_is_stale() -> None:
    assert set(schema_files()) == set(PUBLIC_TYPES)


def test_every_public_type_is_a_message_of_the_events_channel_and_no_message_is_stale() -> None:
    doc = asyncapi()
    channel = doc["channels"][EVENTS_CHANNEL]["messages"]
    assert set(channel) == set(PUBLIC_TYPES)
    assert set(doc["components"]["messages"]) == {*PUBLIC_TYPES, DLQ_MESSAGE}
    published = doc["operations"]["publish"]["messages"]
    assert sorted(m["$ref"] for m in published) == sorted(
        f"#/channels/{EVENTS_CHANNEL}/messages/{t}" for t in PUBLIC_TYPES
    )


def test_asyncapi_document_structure() -> None:
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    description = doc["info"]["description"]
    assert "at least once" in description and "ce_id" in description
    assert "secret" in description.lower()
    assert doc["info"]["title"] and doc["info"]["version"]

    events, dlq = doc["channels"][EVENTS_CHANNEL], doc["channels"][DLQ_CHANNEL]
    assert events["address"] == EVENTS_CHANNEL and dlq["address"] == DLQ_CHANNEL
    assert events["bindings"]["kafka"]["partitions"] == 4
    assert dlq["messages"] == {DLQ_MESSAGE: {"$ref": f"#/components/messages/{DLQ_MESSAGE}"}}

    publish = doc["operations"]["publish"]
    assert publish["action"] == "send"
    assert publish["channel"] == {"$ref": f"#/channels/{EVENTS_CHANNEL}"}

    for name in PUBLIC_TYPES:
        assert events["messages"][name] == {"$ref": f"#/components/messages/{name}"}
        message = doc["components"]["messages"][name]
        assert message["name"] == name and message["summary"]
        assert message["contentType"] == "application/json"
        assert message["payload"] == {"$ref": f"./events/{name}.json"}
        assert payload_path(name).is_file()
        base, pinned = message["headers"]["allOf"]
        assert base == {"$ref": "#/components/schemas/CloudEventHeaders"}
        assert pinned["properties"]["ce_type"] == {"const": name}
        schema_id = payload_schema(name)["$id"]
        assert pinned["properties"]["ce_dataschema"] == {"const": schema_id}
        key = _resolve(doc, message["bindings"]["$ref"])["kafka"]["key"]
        assert key["type"] == "string"

    headers = doc["components"]["schemas"]["CloudEventHeaders"]
    assert set(headers["required"]) == {
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_time",
        "ce_subject",
        "ce_dataschema",
        "ce_sequence",
        "content-type",
        "ce_signature",
        "ce_signaturekid",
    }
    assert set(headers["properties"]) - set(headers["required"]) == {
        "ce_correlationid",
        "ce_causationid",
        "ce_actor",
    }
    assert headers["properties"]["ce_specversion"]["const"] == "1.0"
    for name, prop in headers["properties"].items():
        assert prop.get("description"), f"header {name} has no description"
    for validator in (Draft7Validator, Draft202012Validator):
        validator.check_schema(headers)
        validator.check_schema(doc["components"]["schemas"]["DeadLetterHeaders"])


def test_every_local_ref_in_the_asyncapi_document_resolves() -> None:
    doc = asyncapi()
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            assert _resolve(doc, ref) is not None, ref
        else:
            assert (ASYNCAPI.parent / ref).is_file(), ref


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: Schema, ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# Each schema: valid, described, exactly the published fields ---------------------------


@pytest.mark.parametrize("public_type", PUBLIC_TYPES)
def test_schema_is_a_valid_and_described_2020_12_schema(public_type: str) -> None:
    schema = schema_files()[public_type]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:twofa:event:{public_type}:v1"
    assert schema["title"] == public_type
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert len(schema["description"]) > 40
    for name, prop in schema["properties"].items():
        assert len(prop.get("description", "")) > 10, f"{public_type}.{name} is not described"
    for example in schema["examples"]:
        assert errors(body_validator(public_type), example) == []


# What AsyncAPI's default schema format (a draft-07 superset) reads the same as 2020-12.
PORTABLE_KEYWORDS = {
    "$schema",
    "$id",
    "title",
    "description",
    "examples",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "format",
    "minimum",
    "minLength",
    "maxLength",
    "pattern",
    "const",
    "enum",
}


@pytest.mark.parametrize("public_type", PUBLIC_TYPES)
def test_schema_uses_only_keywords_draft_07_reads_alike(public_type: str) -> None:
    def keywords(schema: Schema) -> Iterator[str]:
        yield from schema
        for sub in schema.get("properties", {}).values():
            yield from keywords(sub)
        if isinstance(schema.get("items"), dict):
            yield from keywords(schema["items"])

    assert set(keywords(schema_files()[public_type])) <= PORTABLE_KEYWORDS


@pytest.mark.parametrize("public_type", PUBLIC_TYPES)
def test_schema_fields_are_exactly_the_published_ones(public_type: str) -> None:
    schema = schema_files()[public_type]
    field_sets = [set(RULES[t].fields) for t in sources_of(public_type)]
    # Published from several domain types (account.locked): a field only some carry is
    # optional.
    assert set(schema["properties"]) == set.union(*field_sets)
    assert set(schema["required"]) == set.intersection(*field_sets)


def _json_type(hint: Any) -> Schema:
    if isinstance(hint, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(inner) == 1 and inner[0] is str, f"no JSON mapping for {hint}"
        return {"type": ["string", "null"]}
    if hint is datetime:
        return {"type": "string", "format": "date-time"}
    if typing.get_origin(hint) is tuple:
        assert typing.get_args(hint) == (str, ...), f"no JSON mapping for {hint}"
        return {"type": "array", "items": {"type": "string"}}
    return {"type": {str: "string", int: "integer", bool: "boolean"}[hint]}


@pytest.mark.parametrize("type_name", PUBLISHED)
def test_schema_field_types_follow_the_event_class(type_name: str) -> None:
    hints = typing.get_type_hints(REGISTRY.class_of(type_name))
    properties = schema_files()[RULES[type_name].public_type]["properties"]
    for name in RULES[type_name].fields:
        expected = _json_type(hints[name])
        actual = {k: properties[name][k] for k in expected if k in properties[name]}
        assert actual == expected, f"{type_name}.{name}"


# What the relay builds validates ----------------------------------------------------


def _published_variants(type_name: str) -> list[tuple[str, IntegrationEvent]]:
    event = sample_event(type_name)
    variants = [
        ("sample", recorded(event)),
        ("bare metadata", recorded(event, full_metadata=False)),
    ]
    nulls = with_nulls(event)
    if nulls is not None:
        variants.append(("nulls", recorded(nulls)))
    out = []
    for label, record in variants:
        public = PUBLIC_EVENTS.to_integration(record)
        assert public is not None
        out.append((label, public))
    return out


SIGNER = EventSigner(SigningKeys.generate("sig-2026"))


@pytest.mark.parametrize("type_name", PUBLISHED)
def test_published_body_and_headers_follow_the_documents(type_name: str) -> None:
    verifier = EventVerifier(SIGNER.keys.public_keys())
    for label, public in _published_variants(type_name):
        record = SIGNER.sign(public)
        body = orjson.loads(record.value)
        assert errors(body_validator(public.type), body) == [], label
        assert verifier.check(record.headers, record.value) == public, label
        headers = text_headers(record.headers)
        assert errors(headers_validator(public.type), headers) == [], label
        assert headers["ce_dataschema"] == payload_schema(public.type)["$id"]


def test_date_time_format_is_really_checked() -> None:
    # Without rfc3339-validator installed jsonschema would pass any string as date-time.
    for checker in (Draft202012Validator.FORMAT_CHECKER, Draft7Validator.FORMAT_CHECKER):
        assert checker.conforms("2026-11-28T12:00:00+00:00", "date-time")
        assert not checker.conforms("2026-11-28T12:00:00", "date-time")  # no offset
        assert not checker.conforms("yesterday", "date-time")


def _good_headers() -> dict[str, str]:
    public = PUBLIC_EVENTS.to_integration(recorded(sample_event("login.failed")))
    assert public is not None
    return text_headers(SIGNER.sign(public).headers)


@pytest.mark.parametrize(
    "change",
    [
        {"ce_id": None},
        {"ce_subject": None},
        {"ce_id": "not-a-uuid"},
        {"ce_specversion": "0.3"},
        {"ce_time": "2026-11-28T12:00:00"},
        {"ce_type": "account.registered"},
        {"ce_dataschema": "urn:twofa:event:login.failed:v2"},
        {"ce_source": "/twofa/username"},
        {"ce_sequence": "-1"},
        {"ce_signature": None},
        {"ce_signaturekid": None},
        {"ce_signature": "not base64!"},
        {"ce_signaturekid": "a kid with spaces"},
        {"x-unknown": "1"},
    ],
)
def test_headers_schema_refuses_what_is_not_the_contract(change: dict[str, str | None]) -> None:
    headers = {**_good_headers(), **change}
    headers = {k: v for k, v in headers.items() if v is not None}
    assert errors(headers_validator("login.failed"), headers) != []


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "password", "consecutive_failures": 1},  # a field missing
        {"reason": "password", "consecutive_failures": 1, "trusted_device": "yes"},
        {"reason": "password", "consecutive_failures": 1, "trusted_device": False, "at": "x"},
        {
            "reason": "password",
            "consecutive_failures": 1,
            "trusted_device": False,
            "password_hash": "$argon2id$",
        },
    ],
)
def test_body_schema_refuses_what_is_not_the_contract(body: Schema) -> None:
    assert errors(body_validator("login.failed"), body) != []


def test_account_locked_is_the_second_factor_lock() -> None:
    validator = body_validator("account.locked")
    until = "2026-11-28T12:15:00+00:00"
    lock = {"factor": "second_factor", "until": until, "consecutive_failures": 5}
    assert errors(validator, lock) == []
    assert errors(validator, {"factor": "second_factor", "until": until}) != []
    assert errors(validator, {"factor": "password"}) != []


# Dead letters -------------------------------------------------------------------------


class _CapturingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.sent.append((topic, headers))


async def test_dead_letter_headers_follow_the_documents() -> None:
    public = PUBLIC_EVENTS.to_integration(recorded(sample_event("login.failed")))
    assert public is not None
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic=EVENTS_CHANNEL,
        partition=2,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=public.key,
        value=b"{not json",
        checksum=None,
        serialized_key_size=len(public.key),
        serialized_value_size=9,
        headers=SIGNER.sign(public).headers,
    )
    consumer = EventConsumer(
        pool=cast(Any, None),
        bootstrap_servers="localhost:9",
        handler=cast(Any, None),
        verifier=EventVerifier({}),
        options=ConsumerOptions(
            name="twofa.auth-sessions", topics=(EVENTS_CHANNEL,), dlq_topic=DLQ_CHANNEL
        ),
    )
    producer = _CapturingProducer()
    error = RefusedEvent("bad_signature", "signature does not match key 'sig-2026'")
    await consumer._dead_letter(cast(AIOKafkaProducer, producer), record, error)

    [(topic, headers)] = producer.sent
    assert topic == DLQ_CHANNEL
    text = text_headers(headers)
    assert text["dlq_reason"] == "bad_signature"
    assert errors(_doc_validator("/components/schemas/DeadLetterHeaders"), text) == []
    original = {k: v for k, v in text.items() if not k.startswith("dlq_")}
    assert errors(headers_validator("login.failed"), original) == []
