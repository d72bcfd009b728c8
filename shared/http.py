"""What every twofa HTTP service shares: RFC 9457 problem bodies, limits, metrics, health.

Every error leaves as ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and a machine ``code``; a validation problem lists the fields at fault but
never echoes their values (they may be passwords or codes). Input never causes a 5xx:
only an outage does (503 with ``Retry-After``), or a bug (500, without details).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Self

import asyncpg
import orjson
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.domain.errors import DomainError, NotFound

__all__ = [
    "MAX_BODY_BYTES",
    "Problem",
    "ProblemBody",
    "StrictBody",
    "broker_answers",
    "database_answers",
    "exclusive_fields",
    "install_common",
    "install_readiness",
    "problem_response",
    "problems",
    "retry_later",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
PROBLEM_JSON = "application/problem+json"

REQUESTS = Counter("twofa_http_requests", "HTTP requests", ["service", "route", "status"])
LATENCY = Histogram(
    "twofa_http_request_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_OUTAGE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    KafkaError,
    TimeoutError,
)


class Problem(Exception):
    """An error the client should see: status, a machine code, a human title."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def retry_later(status: int, code: str, title: str, seconds: int, **extra: Any) -> Problem:
    """A problem the client may retry after ``seconds``: in ``Retry-After`` and the body."""
    return Problem(
        status, code, title, headers={"Retry-After": str(seconds)}, retry_after=seconds, **extra
    )


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:twofa:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Field locations and messages only: never the submitted values.
    out = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        out.append({"field": ".".join(loc) or "body", "message": str(error.get("msg", ""))})
    return out


def install_common(app: FastAPI, service: str) -> None:
    """Problem handlers, the body limit, request metrics, ``/healthz`` and ``/metrics``."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return problem_response(
            exc.status, exc.code, exc.title, exc.detail, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(
            422,
            "invalid_request",
            "The request is not valid",
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed"}
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(
            exc.status_code,
            code,
            titles.get(exc.status_code, "Request refused"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DomainError)
    async def on_domain(request: Request, exc: DomainError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 409
        return problem_response(status, exc.code, str(exc))

    async def on_outage(request: Request, exc: Exception) -> Response:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return problem_response(
            503,
            "unavailable",
            "A backing service is unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )

    # Each by its class, not through the catch-all below: Starlette raises again what
    # reaches that one, and uvicorn then drops the connection under the client.
    for outage in _OUTAGE:
        app.add_exception_handler(outage, on_outage)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _OUTAGE):
            return await on_outage(request, exc)
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(500, "internal_error", "Something went wrong on our side")

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(service, path).observe(time.perf_counter() - started)
        REQUESTS.labels(service, path, str(response.status_code)).inc()
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    _document_common_problems(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _document_common_problems(app: FastAPI) -> None:
    """Have the OpenAPI document name the problems the handlers above give any operation,
    so no route repeats them: 400 (a body that cannot be read), 413 and 422 where it takes
    input, 401 where it needs a token, 503 (an outage) outside the operations probes; and
    every problem as ``application/problem+json`` (FastAPI's own 422 schema never leaves).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            _add_common_problems(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_common_problems(schema: dict[str, Any]) -> None:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            statuses = set()
            if "requestBody" in operation:
                statuses |= {400, 413, 422}
            if operation.get("parameters"):
                statuses.add(422)
            if any(operation.get("security", [])):
                statuses.add(401)
            if "operations" not in operation.get("tags", []):
                statuses.add(503)
            responses = operation.setdefault("responses", {})
            for status in statuses:
                if PROBLEM_JSON not in responses.get(str(status), {}).get("content", {}):
                    responses[str(status)] = _problem_response(status)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ProblemBody", ProblemBody.model_json_schema())
    text = orjson.dumps(schema.get("paths", {})).decode()
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            components.pop(unused, None)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it all first, up to the limit, then replay it,
        # so an oversized body is a clean 413 rather than an error halfway through a handler.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "body_too_large", f"Request bodies are limited to {self.limit} bytes"
        )
        await response(scope, receive, send)


class StrictBody(BaseModel):
    """Base of every request body: unknown fields refused, and no NUL in any text
    (PostgreSQL cannot store it, and no real input contains it)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        for name, value in self.__dict__.items():
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} may not contain NUL characters")
        return self


class ProblemBody(BaseModel):
    """RFC 9457 problem details, as every 4xx and 5xx answer carries them."""

    type: str = Field(examples=["urn:twofa:problem:invalid_code"])
    title: str = Field(examples=["The code is not valid"])
    status: int = Field(examples=[401])
    code: str = Field(examples=["invalid_code"])
    detail: str | None = None

    model_config = {"extra": "allow"}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem answers an operation gives."""
    return {status: _problem_response(status) for status in statuses}


def _problem_response(status: int) -> dict[str, Any]:
    # Not FastAPI's ``model``: that would document the body as application/json.
    schema = {"$ref": "#/components/schemas/ProblemBody"}
    return {"content": {PROBLEM_JSON: {"schema": schema}}, "description": _WHY[status]}


def exclusive_fields(first: str, second: str, *, one_required: bool) -> dict[str, Any]:
    """JSON Schema for what a body's validator says of two optional text fields: never
    both (null counts as absent) and, if ``one_required``, one of them."""

    def sent(*names: str) -> dict[str, Any]:
        return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}

    schema: dict[str, Any] = {"not": sent(first, second)}
    if one_required:
        schema["anyOf"] = [sent(first), sent(second)]
    return schema


_WHY = {
    400: "The body could not be read (not UTF-8, say)",
    401: "Not authenticated, or a credential or code is wrong",
    403: "Authenticated but not allowed",
    404: "No such resource",
    409: "The current state forbids this",
    413: "Body too large",
    422: "The input is not valid",
    423: "Locked after too many wrong codes",
    429: "Too many attempts: wait before trying again",
    503: "A backing service is unavailable",
}


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, bool] = Field(examples=[{"database": True, "broker": True}])


def install_readiness(app: FastAPI, checks: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    """``/readyz``: 200 when every dependency answers, else 503 naming the ones that do not."""

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Database and broker reachable",
        responses={
            200: {"model": Readiness, "description": "Every dependency answers"},
            503: {"model": Readiness, "description": "Some dependency does not answer"},
        },
    )
    async def readyz() -> Response:
        results = await checks()
        body = {"status": "ready" if all(results.values()) else "unavailable", "checks": results}
        return Response(
            orjson.dumps(body),
            status_code=200 if all(results.values()) else 503,
            media_type="application/json",
        )


async def database_answers(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(2):
            return bool(await pool.fetchval("SELECT 1"))
    except (*_OUTAGE, asyncpg.PostgresError):
        return False


async def broker_answers(bootstrap_servers: str) -> bool:
    """Can any bootstrap server be reached over TCP within a second?"""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(1):
                _, writer = await asyncio.open_connection(host or "localhost", int(port))
            writer.close()
            return True
        except (OSError, TimeoutError, ValueError):
            continue
    return False
