"""Waiting for eventual consistency: polling with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx


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


def wait_until_ready(url: str, within: float = 60.0) -> None:
    """Poll ``url`` + ``/readyz`` until it answers 200 (database, broker, every consumer
    caught up), not just until the port accepts; fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready within {within} s")
        time.sleep(0.1)
