"""Waking the relay: one coalesced ``NOTIFY`` after appends, outside their transactions.

A notification sent inside the appending transaction would make every commit on the
server queue for PostgreSQL's notification lock. Instead each process pokes a
``Notifier`` after an append; at most one ``pg_notify`` per ``delay`` leaves on a
connection of its own. A notification that arrives before a slow transaction commits
is harmless: the relay's polling fallback picks the events up.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

__all__ = ["CHANNEL", "Notifier"]

log = logging.getLogger(__name__)

CHANNEL = "twofa_events"


class Notifier:
    def __init__(self, pool: asyncpg.Pool, *, delay: float = 0.002) -> None:
        self.pool = pool
        self.delay = delay
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self) -> None:
        """Ask for a notification soon; pokes in the same few milliseconds share one."""
        if self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self._scheduled = False
        task = asyncio.create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("relay notification not sent (%s); it will poll", type(exc).__name__)
