"""Waiting for eventual consistency: polling with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], object], within: float = 20.0) -> None:
    """Poll an async or plain ``check`` until it returns truthy, or fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met before the deadline")
        await asyncio.sleep(0.05)
