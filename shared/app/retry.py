"""Optimistic concurrency: run a load-decide-append step again when another writer won."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.eventstore.store import ConcurrencyError

T = TypeVar("T")


async def retry_on_conflict(decide_and_save: Callable[[], Awaitable[T]], attempts: int = 200) -> T:
    """Run a load-decide-append step again whenever another writer got there first.

    Each attempt reloads the stream, so the decision is always made on the latest state.
    """
    for attempt in range(attempts):
        try:
            return await decide_and_save()
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
    raise AssertionError("unreachable")
