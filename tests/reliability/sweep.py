"""The secrets sweep: every secret a reliability test used, searched for everywhere.

Everywhere is: every record on the stack's Kafka topics (events and dead letters),
every audit entry, every line every process logged, and every response body that is
not meant to carry a secret (enrolment start, confirm and regenerate are; token
responses carry tokens, which are not among the secrets searched for).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.reliability.report import REPORT
from tests.reliability.stack import Stack
from tests.support.secretsearch import Secret, leaks

__all__ = ["Recorder", "assert_no_secrets"]

TOPICS = ("twofa.events.v1", "twofa.events.v1.dlq")


@dataclass
class Recorder:
    """Remembers the secrets a test used and the bodies it got back."""

    secrets: list[Secret] = field(default_factory=list)
    bodies: list[tuple[str, str]] = field(default_factory=list)  # (request, body)
    requests: int = 0

    def secret(self, name: str, value: str, *, code: bool = False) -> str:
        assert value, f"secret {name} is empty"
        self.secrets.append(Secret(name, value, code))
        return value

    def response(self, response: httpx.Response, *, carries_secrets: bool = False) -> None:
        self.requests += 1
        if not carries_secrets:
            request = f"{response.request.method} {response.request.url.path}"
            self.bodies.append((request, response.content.decode("utf-8", "replace")))


async def kafka_records(bootstrap: str) -> list[str]:
    """Every record's key, headers and value on the stack's topics, as text."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    texts: list[str] = []
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in TOPICS
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return texts
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        # Not up to end_offsets: Tansu reports a partition's end as one past the first
        # record of its last batch. Read until a whole second brings nothing new.
        quiet = 0
        while quiet < 4:
            batches = await consumer.getmany(timeout_ms=250)
            quiet = 0 if batches else quiet + 1
            for records in batches.values():
                for r in records:
                    headers = " ".join(f"{k}={v.decode('utf-8', 'replace')}" for k, v in r.headers)
                    key = (r.key or b"").decode("utf-8", "replace")
                    value = (r.value or b"").decode("utf-8", "replace")
                    texts.append(f"{key} {headers} {value}")
    finally:
        await consumer.stop()
    return texts


async def audit_entries(admin_dsn: str) -> list[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        # The stored bytes as text: row_to_json would show them in hex, hiding a secret.
        rows = await conn.fetch(
            """SELECT row_to_json(e)::text || coalesce(convert_from(e.content, 'UTF8'), '')
                      AS entry
               FROM audit.entries e"""
        )
    finally:
        await conn.close()
    return [row["entry"] for row in rows]


async def assert_no_secrets(stack: Stack, recorder: Recorder) -> dict[str, int]:
    """Fail naming every place a secret shows up; else how much was searched."""
    records = await kafka_records(stack.broker.bootstrap_servers)
    entries = await audit_entries(stack.admin_dsn)
    logs = stack.log_text()
    assert records, "no Kafka record to search: the sweep would prove nothing"
    assert entries, "no audit entry to search: the sweep would prove nothing"
    assert recorder.secrets, "no secret recorded: the sweep would prove nothing"
    found = []
    kafka_text = "\n".join(records)
    found += [f"Kafka: {name}" for name in leaks(kafka_text, recorder.secrets)]
    audit_text = "\n".join(entries)
    found += [f"audit log: {name}" for name in leaks(audit_text, recorder.secrets)]
    found += [f"logs: {name}" for name in leaks(logs, recorder.secrets)]
    for request, body in recorder.bodies:
        found += [f"response to {request}: {name}" for name in leaks(body, recorder.secrets)]
    assert not found, found
    searched = {
        "secrets searched for": len(recorder.secrets),
        "Kafka records searched": len(records),
        "audit entries searched": len(entries),
        "log lines searched": logs.count("\n") + 1,
        "response bodies searched": len(recorder.bodies),
    }
    for name, count in searched.items():
        REPORT.other[f"sweep: {name}"] += count
    return searched
