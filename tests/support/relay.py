"""The real outbox relay, run in-process in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.relay import Relay, RelayOptions
from tests.support.settings import event_signer


def make_relay(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str, **options: float
) -> Relay:
    """The real relay from ``store`` to ``topic`` (named after it), with ``options``,
    signing with this test's event keys."""
    return Relay(
        dsn=database_url,
        store=store,
        mapping=PUBLIC_EVENTS,
        signer=event_signer(),
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic, **options),  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    """``relay`` running in this event loop for the block, stopped cleanly after."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def relaying(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str
) -> AsyncIterator[None]:
    """``store``'s events published to ``topic`` by the real relay, for the block."""
    relay = make_relay(database_url, store, kafka_bootstrap, topic, poll_interval=0.2)
    async with running(relay):
        yield
