"""What the relay really publishes follows shared/schemas, record by record.

One sample of every domain event type goes into the store, the relay runs against real
PostgreSQL and Kafka, and every record on the topic is checked against the AsyncAPI
document and the JSON Schema its ``ce_type`` names.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest

from shared.eventstore.envelope import EventMetadata, NewEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from tests.support.kafka import event_ids, read_topic
from tests.support.relay import make_relay, running
from tests.support.samples import sample_event, secret_strings
from tests.unit.test_event_schemas import (
    RULES,
    body_validator,
    errors,
    headers_validator,
    payload_schema,
    stream_of,
    text_headers,
    with_nulls,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool, REGISTRY)


async def append_one_of_each(store: EventStore, account: str) -> dict[str, NewEvent]:
    """A sample of every domain event type (and a variant with its optional fields null),
    half of them with full metadata, on the streams they live on; by event id."""
    by_stream: dict[str, list[NewEvent]] = {}
    for i, type_name in enumerate(sorted(REGISTRY.types())):
        sample = sample_event(type_name)
        for event in (sample, with_nulls(sample)):
            if event is None:
                continue
            metadata = (
                EventMetadata(actor=f"account:{account}", causation_id=uuid.uuid4())
                if i % 2
                else EventMetadata()
            )
            by_stream.setdefault(stream_of(type_name, account), []).append(
                NewEvent(event, metadata)
            )
    for stream, events in by_stream.items():
        await store.append(stream, events, 0)
    return {str(e.event_id): e for events in by_stream.values() for e in events}


async def test_every_published_record_follows_the_published_schemas(
    store: EventStore, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    account = str(uuid.uuid4())
    appended = await append_one_of_each(store, account)
    public = {i for i, e in appended.items() if e.event.type in RULES}
    internal = set(appended) - public
    assert internal, "the sample should include internal events the relay must skip"

    async with running(make_relay(database_url, store, kafka_bootstrap, topic)):
        records = await read_topic(
            kafka_bootstrap, topic, until=lambda r: public <= set(event_ids(r))
        )

    assert sorted(event_ids(records)) == sorted(public)  # each once, nothing internal
    secrets = [s.encode() for s in secret_strings()]
    for record in records:
        headers = text_headers(record.headers)
        event_type = headers["ce_type"]
        where = f"{event_type} {headers['ce_id']}"
        assert event_type in PUBLIC_EVENTS.public_types(), where
        assert errors(headers_validator(event_type), headers) == [], where
        assert headers["ce_dataschema"] == payload_schema(event_type)["$id"], where
        assert record.value is not None, where
        assert errors(body_validator(event_type), orjson.loads(record.value)) == [], where

        source = appended[headers["ce_id"]]
        assert RULES[source.event.type].public_type == event_type, where
        category = stream_of(source.event.type, account).partition("-")[0]
        assert headers["ce_source"] == f"/twofa/{category}", where
        assert record.key == account.encode() == headers["ce_subject"].encode(), where
        wire = record.value + b"".join(k.encode() + v for k, v in record.headers)
        for secret in secrets:
            assert secret not in wire, f"{where} leaks {secret!r}"
