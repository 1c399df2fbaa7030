"""The API's contract: one error shape for every 4xx and 5xx, and an OpenAPI document that says
what each operation really answers, derived from the routes so a new endpoint is born with it.

Every error body is `ErrorBody`: a sentence in `detail` and, when fields are at fault, one
`Problem` per field (FastAPI's validation errors are converted to the same shape). The document
is completed from what each route depends on: a token (401; 403 when it needs more than an
operator's), parameters or a body (422), a body (400 unparsable, 413 too large), the database
(503), so nobody has to remember to list them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from pantau.ids import DEVICE_ID_PATTERN, METRIC_PATTERN
from streams.urls import redact_text

log = logging.getLogger(__name__)


# Text in the API: no control characters (C0, DEL, C1; PostgreSQL refuses NUL) other than tab
# and line breaks (a spreadsheet cell may hold them), and for names at least one character that
# is not a space. Written with \u escapes, which the validator's (Rust) and the schema's
# (ECMA-262) regex engines read alike; "space" is what Python's str.split() and strip() take
# away, so a value the schema allows is one that stays non-empty once tidied.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_CONTROL_BUT_LINES = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
_SPACE = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_CONTROLS = rf"^[^{_CONTROL}]*$"
MULTILINE = rf"^[^{_CONTROL_BUT_LINES}]*$"
VISIBLE = rf"^[^{_CONTROL_BUT_LINES}]*[^{_CONTROL}{_SPACE}][^{_CONTROL_BUT_LINES}]*$"


def one_line(text: str) -> str:
    """A name as a person means it: runs of spaces and line breaks read as one space."""
    return " ".join(text.split())


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def not_given(**field: Any) -> Any:
    """The default of a field that cannot be null but may be left out (a PATCH's): None, never
    validated, and kept out of the schema, which must not offer null for it."""
    return Field(None, json_schema_extra=_no_default, **field)


class Problem(BaseModel):
    """One thing wrong with a request or an import row."""

    row: int | None = Field(None, description="the import row (1 = first data row)")
    line: int | None = Field(
        None, description="the file's own line (CSV) or sheet row (XLSX), the header's being 1"
    )
    field: str = Field(description="the parameter or field, e.g. `limit` or `latitude`")
    message: str = Field(description="what is wrong and what was expected")


class ErrorBody(BaseModel):
    """Every error Pantau's API answers (4xx and 5xx)."""

    detail: str = Field(description="what went wrong and what to do, in one sentence")
    problems: list[Problem] = Field(
        default_factory=list, description="one entry per field at fault; empty otherwise"
    )


def error_response(
    status: int,
    detail: str,
    problems: list[Problem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, problems=problems or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def invalid(problems: list[Problem]) -> JSONResponse:
    """422 with the problems, and a detail that reads alone (a log line, a terminal)."""
    summary = "; ".join(_describe(p) for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return error_response(422, f"the request is not what was expected: {summary}{more}", problems)


def _describe(p: Problem) -> str:
    where = f"row {p.row}: " if p.row is not None else ""
    return f"{where}{p.field}: {p.message}"


# -- FastAPI's validation errors, in our shape ----------------------------------------------


_MEANING = {
    VISIBLE: "visible text (not only spaces) without control characters",
    NO_CONTROLS: "text without control characters",
    MULTILINE: "text without control characters (tabs and line breaks allowed)",
    DEVICE_ID_PATTERN: "an id of letters, digits and . _ : @ - (at most 128), e.g. wl-setu-01",
    METRIC_PATTERN: "a metric name of letters, digits and _ . : / % - (at most 128), e.g. rain_mm",
}


def _field(loc: tuple[Any, ...]) -> str:
    where, *path = loc or ("body",)
    if where == "header" and path:
        return "-".join(part.capitalize() for part in str(path[0]).split("-"))
    return ".".join(str(part) for part in path) or str(where)


def _expected(error: dict[str, Any]) -> str:
    """Pydantic's message, rephrased to name what was expected and what came instead."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    message = str(error.get("msg", "is not valid"))
    if kind == "missing":
        return "required: expected a value"
    if kind == "extra_forbidden":
        return "is not a field of this request; leave it out"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        message = "expected " + _MEANING.get(pattern, f"text matching {pattern}")
    elif kind == "literal_error":
        message = f"expected one of {ctx.get('expected', '')}"
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    elif message.startswith("String should have "):
        message = "expected " + message.removeprefix("String should have ")
    elif message.startswith("List should have "):
        message = "expected " + message.removeprefix("List should have ")
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    got = error.get("input")
    if isinstance(got, str) or (isinstance(got, int) and not isinstance(got, bool)):
        shown = redact_text(repr(got))  # a camera URL pasted anywhere: never its password
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        message += f" (got {shown})"
    return message


def problems_of(exc: RequestValidationError) -> list[Problem]:
    return [
        Problem(field=_field(tuple(e.get("loc", ()))), message=_expected(e)) for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Every HTTPException and validation error answers in `ErrorBody`'s shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            where = next(e for e in errors if e.get("type") == "json_invalid")
            reason = (where.get("ctx") or {}).get("error", "not JSON")
            return error_response(
                400, f"the request body is not valid JSON ({reason}); expected a JSON object"
            )
        problems = problems_of(exc)
        if any(p.field == "If-Match" and p.message.startswith("required") for p in problems):
            return error_response(
                428,
                'If-Match is required: send the ETag from reading the device, e.g. If-Match: "3"',
            )
        return invalid(problems)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allowed = _allowed(app, request.url.path)
            headers["Allow"] = ", ".join(allowed)
            detail = f"method {request.method} is not allowed here; expected {' or '.join(allowed)}"
        return error_response(exc.status_code, detail, headers=headers or None)


def _allowed(app: FastAPI, path: str) -> list[str]:
    """The methods of the documented path that `path` is (Starlette's 405 names only the first
    route's): of the templates it matches, the most literal one, so `/devices/export` is the
    export's path and not `/devices/{device_id}`."""
    matching = [
        route
        for route in iter_route_contexts(app.routes)
        if route.path_format and route.methods and compile_path(route.path_format)[0].match(path)
    ]
    if not matching:
        return []
    literal = min((route.path_format or "").count("{") for route in matching)
    return sorted(
        {
            method
            for route in matching
            if (route.path_format or "").count("{") == literal
            for method in route.methods or ()
        }
    )


# -- the OpenAPI document -----------------------------------------------------------------

ROLE_ATTRIBUTE = "pantau_role"  # set on the `require(role)` dependency by pantau.auth
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_STANDARD = {
    400: "the body could not be parsed (not JSON, or not the declared Content-Type)",
    401: "no API token, or an unknown or revoked one (`Authorization: Bearer <token>`)",
    403: "the token's role is too low for this operation",
    413: "the body is over `http.max_body_bytes`",
    422: "a parameter or field is not what was expected; `problems` names each",
    503: "the database is unavailable or its schema not ready yet; try again (Retry-After)",
}


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _role(route: RouteContext) -> str | None:
    for sub in _dependencies(route.dependant):
        role = getattr(sub.call, ROLE_ATTRIBUTE, None)
        if role is not None:
            return str(role)
    return None


def _statuses(route: RouteContext, operation: dict[str, Any]) -> dict[int, str]:
    """The errors a route can answer by what it depends on."""
    found: dict[int, str] = {}
    role = _role(route)
    if role is not None:
        found[401] = _STANDARD[401]
        if role != "operator":  # every valid token is an operator at least
            found[403] = _STANDARD[403]
    if operation.get("parameters") or "requestBody" in operation:
        found[422] = _STANDARD[422]
    if "requestBody" in operation:
        found[400] = _STANDARD[400]
        found[413] = _STANDARD[413]
    if (route.path_format or "").startswith("/api/"):
        found[503] = _STANDARD[503]
    return found


def _default_error(response: dict[str, Any]) -> bool:
    """No body declared, or FastAPI's own validation error (replaced by ours)."""
    content = response.get("content")
    return not content or "HTTPValidationError" in str(content)


def complete(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with every error status an operation can answer, each in the one
    error shape; cached on the app as FastAPI's own is."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=app.servers,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components.update(components["ErrorBody"].pop("$defs", {}))
    routes = {  # included routers are nested, not copied, in FastAPI >= 0.16x
        (route.path_format, method.lower()): route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((path, method))
            if route is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in _statuses(route, operation).items():
                responses.setdefault(str(status), {"description": description})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and _default_error(response):
                    response["content"] = {"application/json": {"schema": _ERROR}}
    app.openapi_schema = schema
    return schema


def contract(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """For `app.openapi = contract(app)`."""
    return lambda: complete(app)
