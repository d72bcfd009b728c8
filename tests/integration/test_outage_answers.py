"""An outage is a 503 with ``Retry-After`` over real uvicorn, and the connection survives it.

A client that keeps its connection (every HTTP client does) must be able to send its
next request on it: a retry after the 503, or any other request.
"""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI

from shared.web.middleware import install_common
from tests.support.apps import is_problem, served

pytestmark = pytest.mark.integration

OUTAGES = [
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionRefusedError(111, "Connection refused"),
    KafkaConnectionError("broker gone"),
]


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda e: type(e).__name__)
async def test_an_outage_answers_503_and_keeps_the_connection(outage: Exception) -> None:
    app = FastAPI()
    install_common(app, "test")

    @app.post("/v1/things")
    async def things() -> None:
        raise outage

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with served(app) as url, httpx.AsyncClient(base_url=url, limits=limits) as client:
        local_ports = set()
        for _ in range(3):
            answer = await client.post("/v1/things", json={})
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
            assert is_problem(answer) and answer.json()["code"] == "unavailable"
            stream = answer.extensions["network_stream"]
            local_ports.add(stream.get_extra_info("client_addr")[1])
    assert len(local_ports) == 1  # one connection for all three: the server kept it open
