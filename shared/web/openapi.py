"""The OpenAPI document names the problems every operation can answer with."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI

from shared.web.problems import PROBLEM_JSON, ProblemBody

__all__ = ["document_common_problems", "exclusive_fields", "problems"]


def document_common_problems(app: FastAPI) -> None:
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
            add_common_problems(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_common_problems(schema: dict[str, Any]) -> None:
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


def exclusive_fields(first: str, second: str, *, one_required: bool) -> dict[str, Any]:
    """JSON Schema for what a body's validator says of two optional text fields: never
    both (null counts as absent) and, if ``one_required``, one of them."""

    def sent(*names: str) -> dict[str, Any]:
        return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}

    schema: dict[str, Any] = {"not": sent(first, second)}
    if one_required:
        schema["anyOf"] = [sent(first), sent(second)]
    return schema


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem answers an operation gives."""
    return {status: _problem_response(status) for status in statuses}


def _problem_response(status: int) -> dict[str, Any]:
    # Not FastAPI's ``model``: that would document the body as application/json.
    schema = {"$ref": "#/components/schemas/ProblemBody"}
    return {"content": {PROBLEM_JSON: {"schema": schema}}, "description": _WHY[status]}


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
