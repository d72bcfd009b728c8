"""The audit service's HTTP API (``/v1/audit``), for bearers of the ``security`` role."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from services.audit import usecases
from services.audit.adapters import log_store as log
from shared.security.tokens import Claims
from shared.web.auth import AccessClaims, require_role
from shared.web.openapi import problems
from shared.web.problems import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit"])

MAX_LIMIT = 500
KEEPALIVE_SECONDS = 15.0


def security(claims: AccessClaims) -> Claims:
    require_role(claims, "security", aal2=True)
    return claims


SecurityClaims = Annotated[Claims, Depends(security)]


def pool_of(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


PoolDep = Annotated[asyncpg.Pool, Depends(pool_of)]

AccountQ = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-fA-F-]{1,64}$")]
TypeQ = Annotated[str | None, Query(alias="type", max_length=100, pattern=r"^[a-z_.]+$")]
ActorQ = Annotated[str | None, Query(max_length=200, pattern=r"^[\w.:@-]+$")]
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    # pydantic alone would also take a Unix time ("0.5") or a bare date.
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset")
    return value


TimeQ = Annotated[
    AwareDatetime | None,
    BeforeValidator(_rfc3339),
    Query(description="RFC 3339 with an offset"),
]


def filters(
    account: AccountQ = None,
    event_type: TypeQ = None,
    actor: ActorQ = None,
    since: TimeQ = None,
    until: TimeQ = None,
) -> log.Filters:
    if since is not None and until is not None and since >= until:
        raise Problem(422, "invalid_time_range", "since must be before until")
    return log.Filters(account, event_type, actor, since, until)


FiltersDep = Annotated[log.Filters, Depends(filters)]


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end (for now)"
    )


@router.get(
    "/events",
    response_model=Page,
    summary="Audit entries, oldest first, filtered, with cursor pagination",
    responses=problems(401, 403, 422),
)
async def events(
    pool: PoolDep,
    claims: SecurityClaims,
    where: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Page:
    after = 0
    if cursor is not None:
        decoded = log.decode_cursor(cursor)
        if decoded is None:
            raise Problem(422, "invalid_cursor", "The cursor is not one this API gave out")
        after = decoded
    rows = await log.page(pool, where, after, limit)
    items = [log.row_to_json(r) for r in rows]
    next_cursor = log.encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    "/events/stream",
    summary="Live tail as Server-Sent Events, resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **problems(401, 403, 422)},
)
async def stream(
    request: Request,
    pool: PoolDep,
    claims: SecurityClaims,
    where: FiltersDep,
    last_event_id: Annotated[str | None, Header(max_length=20, pattern=r"^\d{1,18}$")] = None,
) -> StreamingResponse:
    start = int(last_event_id) if last_event_id else await log.current_end(pool)

    async def tail() -> AsyncIterator[bytes]:
        after = start
        quiet = 0.0
        yield b": twofa audit stream\n\n"
        while True:  # Starlette cancels this generator when the client goes away
            rows = await log.page(pool, where, after, 200)
            for row in rows:
                body = orjson.dumps(log.row_to_json(row))
                yield (
                    f"id: {row['id']}\nevent: {row['event_type']}\ndata: ".encode() + body + b"\n\n"
                )
                after = row["id"]
            if rows:
                quiet = 0.0
                continue
            await asyncio.sleep(0.1)
            quiet += 0.1
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield b": keepalive\n\n"

    return StreamingResponse(
        tail(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


CSV_COLUMNS = [
    "id",
    "event_id",
    "account_id",
    "chain_seq",
    "type",
    "source",
    "actor",
    "correlation_id",
    "causation_id",
    "occurred_at",
    "store_position",
    "dataschema",
    "data",
    "kafka_partition",
    "kafka_offset",
    "prev_hash",
    "hash",
    "recorded_at",
]


@router.get(
    "/export",
    summary="Every entry in a time range, streamed as NDJSON or CSV",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        **problems(401, 403, 422),
    },
)
async def export(
    pool: PoolDep,
    claims: SecurityClaims,
    where: FiltersDep,
    format: Annotated[Literal["ndjson", "csv"], Query()] = "ndjson",
) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        if format == "csv":
            yield _csv_line(CSV_COLUMNS)
        async for row in log.stream_after(pool, where, 0):
            item = log.row_to_json(row)
            if format == "ndjson":
                yield orjson.dumps(item) + b"\n"
            else:
                item["data"] = orjson.dumps(item["data"]).decode()
                yield _csv_line([_cell(item[c]) for c in CSV_COLUMNS])

    media = "application/x-ndjson" if format == "ndjson" else "text/csv"
    name = f"twofa-audit.{format}"
    return StreamingResponse(
        lines(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start like formulas: defuse them.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_line(values: list[str]) -> bytes:
    # CRLF, as RFC 4180 has it: the writer then quotes a cell holding a lone CR too, which
    # a reader would otherwise take for the end of the row.
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue().encode()


@router.get(
    "/verify",
    summary="Walk every chain: OK with counts and the heads' digest, or the first broken entry",
    responses=problems(401, 403),
)
async def verify(pool: PoolDep, claims: SecurityClaims) -> dict[str, Any]:
    return await usecases.verify(pool)


@router.get(
    "/summary",
    summary="Counts by event type and the accounts with the most failures, code uses, locks",
    responses=problems(401, 403, 422),
)
async def summary(
    pool: PoolDep, claims: SecurityClaims, since: TimeQ = None, until: TimeQ = None
) -> dict[str, Any]:
    if since is not None and until is not None and since >= until:
        raise Problem(422, "invalid_time_range", "since must be before until")
    return await usecases.summary(pool, since, until)
