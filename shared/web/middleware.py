"""What every twofa HTTP app installs: problem handlers, the body limit, metrics.

Input never causes a 5xx: only an outage does (503 with ``Retry-After``), or a bug
(500, without details).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.app.errors import AppError
from shared.domain.errors import DomainError
from shared.platform.outages import OUTAGES
from shared.web.openapi import document_common_problems
from shared.web.problems import Problem, problem_for, problem_response, validation_errors

__all__ = ["MAX_BODY_BYTES", "BodyLimit", "SingleValuedQuery", "install_common"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
REQUESTS = Counter("twofa_http_requests", "HTTP requests", ["service", "route", "status"])
LATENCY = Histogram(
    "twofa_http_request_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def install_common(app: FastAPI, service: str) -> None:
    """Problem handlers, the body limit, request metrics and ``/healthz`` (the metrics
    themselves are served apart: shared.platform.metrics)."""
    _install_problem_handlers(app)

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
    app.add_middleware(SingleValuedQuery)
    document_common_problems(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


class SingleValuedQuery:
    """Every twofa query parameter takes one value: one given twice is a 422 naming it,
    never a silent pick of either. Plain ASGI, and only a query with ``&`` is parsed,
    so the routes without one (most of them) pay nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"&" in query:
            seen: set[str] = set()
            repeated: list[str] = []
            for key, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if key in seen and key not in repeated:
                    repeated.append(key)
                seen.add(key)
            if repeated:
                refusal = problem_response(
                    422,
                    "invalid_request",
                    "The request is not valid",
                    errors=[
                        {
                            "field": f"query.{key}",
                            "message": "given more than once; this parameter takes one value",
                        }
                        for key in repeated
                    ],
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _answer(problem: Problem) -> Response:
    return problem_response(
        problem.status,
        problem.code,
        problem.title,
        problem.detail,
        headers=problem.headers,
        **problem.extra,
    )


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return _answer(exc)

    @app.exception_handler(AppError)
    async def on_refusal(request: Request, exc: AppError) -> Response:
        return _answer(problem_for(exc))

    @app.exception_handler(DomainError)
    async def on_domain(request: Request, exc: DomainError) -> Response:
        return _answer(problem_for(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(
            422,
            "invalid_request",
            "The request is not valid",
            errors=validation_errors(exc),
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
    for outage in OUTAGES:
        app.add_exception_handler(outage, on_outage)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        if isinstance(exc, OUTAGES):
            return await on_outage(request, exc)
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(500, "internal_error", "Something went wrong on our side")


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
