"""Tasks that run beside a service (consumers, feeds) and stop with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)
Runner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def background(*runners: Runner) -> AsyncIterator[None]:
    """Run ``runners`` (consumers, feeds) beside the app; stop them when the block ends."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(runner(stop)) for runner in runners]
    try:
        yield
    finally:
        stop.set()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background task failed: %r", task.exception())
