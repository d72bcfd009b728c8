"""The one list of errors that mean a backing service is down, not a bad request.

The HTTP shell answers them with 503 and ``Retry-After``; the relay and the consumer
loop wait and try again. None of them is ever caused by a request's input.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

__all__ = ["OUTAGES"]

OUTAGES: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,  # the server is starting up (or shutting down)
    asyncpg.TooManyConnectionsError,
    KafkaError,
    TimeoutError,
)
