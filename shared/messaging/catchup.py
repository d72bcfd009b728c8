"""Whether a consumer has caught up with what its topics held when it started.

On connecting, a consumer notes the end offset of every partition of its topics (the
``targets``). It has caught up once, on every partition, what it reached is at least
that offset: its own position (the revocation feed reads every partition), or what its
group committed (a group member: a partition another replica holds counts once the
group's committed offset got there). Once caught up it stays so: later lag is not
"unready" (audit's shows on the metrics listener). A topic with no records is caught
up at once. ``/readyz`` answers 503 until every consumer of the process has caught up.

A group member is watched by ``follow_group``, a client of its own that joins no group:
it reads the end offsets and the group's commits at once, while the member may still
wait seconds for the group to take it in. A topic that was empty, or that the other
replicas had already consumed, makes a fresh replica ready without that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.messaging.kafka import create_consumer

__all__ = [
    "CatchUp",
    "committed_offsets",
    "end_offsets",
    "follow_group",
    "reached",
    "topic_partitions",
]

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Hashable)


def reached(targets: Mapping[P, int], progress: Mapping[P, int]) -> bool:
    """True when every partition's progress is at least its target (a missing one is 0)."""
    return all(progress.get(partition, 0) >= end for partition, end in targets.items())


class CatchUp:
    """One consumer's targets and whether it has reached them; ``done`` feeds /readyz."""

    def __init__(self) -> None:
        self.targets: dict[TopicPartition, int] | None = None
        self.done = False

    def begin(self, ends: Mapping[TopicPartition, int]) -> None:
        """The end offsets seen on connecting. A reconnect before catching up takes them
        afresh (a broker with memory storage may have come back empty); after, no-op."""
        if not self.done:
            self.targets = dict(ends)
            self.observe({})

    def observe(self, progress: Mapping[TopicPartition, int]) -> bool:
        """Note how far the consumer got; True once caught up (for good)."""
        if not self.done and self.targets is not None and reached(self.targets, progress):
            self.done = True
        return self.done


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, waiting up to 5 s for the broker to know it."""
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise KafkaError(f"topic {topic} has no partitions")


async def end_offsets(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> dict[TopicPartition, int]:
    """The offset after the last record of every partition of ``topics``, now."""
    partitions = [tp for topic in topics for tp in await topic_partitions(consumer, topic)]
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return ends


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """What the consumer's group has committed on each partition (0 where nothing)."""
    return {tp: await consumer.committed(tp) or 0 for tp in partitions}


async def follow_group(
    progress: CatchUp,
    *,
    bootstrap_servers: str,
    group_id: str,
    topics: Sequence[str],
    stop: asyncio.Event,
    poll_seconds: float = 0.2,
) -> None:
    """Until ``progress`` is done or ``stop`` is set: the end offsets of ``topics`` on
    connecting, then ``group_id``'s commits every ``poll_seconds``; reconnects after an
    outage (at most 5 s apart), taking the end offsets afresh."""
    delay = poll_seconds
    while not progress.done and not stop.is_set():
        watcher = create_consumer(bootstrap_servers, [], group_id=group_id, fetch_max_wait_ms=10)
        try:
            await watcher.start()
            progress.begin(await end_offsets(watcher, topics))
            while not progress.observe(await committed_offsets(watcher, progress.targets or {})):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds)
                if stop.is_set():
                    return
        except KafkaError as exc:
            log.warning("catch-up of %s: cannot reach the broker (%s)", group_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        finally:
            await watcher.stop()
