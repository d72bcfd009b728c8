"""Reading a test topic back from its start, until a condition holds or a deadline passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    within: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the start, once ``until(records)`` holds."""
    # Assigned partitions, no group: no join round, so reading starts at once.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        deadline = asyncio.get_running_loop().time() + within
        while not until(records):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(records)} records on {topic}; condition not met")
            batches = await consumer.getmany(timeout_ms=200)
            for part in batches.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def event_ids(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records]
