"""Every failure leaves as the error body of the protocol the client speaks, with a real status.

Each protocol registers its error format for its path prefix (`register_error_format`); OpenAI's
`{"error": {message, type, param, code}}` is the default. Handlers, middlewares and streams all
go through `error_response` / `error_payload`, so an error body is written once per protocol."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import OverloadedError, ServiceError

logger = logging.getLogger(__name__)

# Pydantic adds the union member tried ("str", "list[TextPart]", a model's class name) to an
# error's location; the client needs the field path only (request fields are snake_case).
_UNION_TAG = re.compile(r"[\[\](),]|^(str|int|float|bool|list|dict|none)$|^[A-Z][A-Za-z0-9]*$")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}


@dataclass(frozen=True)
class ErrorDetail:
    """What went wrong, independent of the protocol that reports it."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    error_type: str | None = None  # the OpenAI-style type; None = derived from the status

    @property
    def type(self) -> str:
        return self.error_type or _STATUS_TYPES.get(self.status, "server_error")


ErrorRenderer = Callable[[ErrorDetail], dict[str, object]]


def openai_error(detail: ErrorDetail) -> dict[str, object]:
    return {"error": {"message": detail.message, "type": detail.type, "param": detail.param, "code": detail.code}}


_FORMATS: list[tuple[str, ErrorRenderer]] = []


def register_error_format(path_prefix: str, render: ErrorRenderer) -> None:
    """Errors on paths under `path_prefix` use `render` (the longest matching prefix wins)."""
    _FORMATS[:] = [(prefix, existing) for prefix, existing in _FORMATS if prefix != path_prefix]
    _FORMATS.append((path_prefix, render))
    _FORMATS.sort(key=lambda item: len(item[0]), reverse=True)


def error_renderer(path: str) -> ErrorRenderer:
    for prefix, render in _FORMATS:
        if path.startswith(prefix):
            return render
    return openai_error


def error_payload(path: str, detail: ErrorDetail) -> dict[str, object]:
    return error_renderer(path)(detail)


def error_response(path: str, detail: ErrorDetail, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_payload(path, detail), status_code=detail.status, headers=headers)


def detail_of(error: ServiceError) -> ErrorDetail:
    return ErrorDetail(error.status_code, error.message, error.param, error.code, error.error_type)


def service_error_response(path: str, error: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_seconds)} if isinstance(error, OverloadedError) else None
    return error_response(path, detail_of(error), headers)


def _describe_validation(error: RequestValidationError) -> tuple[str, str | None]:
    return describe_problems(error.errors())


def describe_problems(errors: Sequence[Any], prefix: tuple[str | int, ...] = ()) -> tuple[str, str | None]:
    """A 400 message and the first field's path for pydantic's problems, their locations under
    `prefix` (for parts of a request validated on their own, such as one input item)."""
    problems = []
    first_param: str | None = None
    for problem in errors:
        location = [str(part) for part in (*prefix, *problem.get("loc", ())) if part != "body"]
        if problem.get("type") == "json_invalid":
            return f"The request body is not valid JSON: {problem.get('msg')}", None
        location = [part for part in location if not _UNION_TAG.search(part)]
        param = ".".join(location) or None
        first_param = first_param or param
        problems.append(f"{param or 'body'}: {problem.get('msg')}")
    return "Invalid request: " + "; ".join(dict.fromkeys(problems)), first_param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
        return service_error_response(request.url.path, error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(error)
        return error_response(request.url.path, ErrorDetail(400, message, param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404 and error.detail == "Not Found":
            message = f"Unknown route {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return error_response(request.url.path, ErrorDetail(error.status_code, message), dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("unexpected error", exc_info=error)
        return error_response(request.url.path, ErrorDetail(500, f"Internal server error: {type(error).__name__}"))
