"""Every failure leaves as an OpenAI error body: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import OverloadedError, ServiceError

logger = logging.getLogger(__name__)

# Pydantic adds the union member tried ("str", "list[TextPart]") to an error's location;
# the client needs the field path only.
_UNION_TAG = re.compile(r"[\[\](),]|^(str|int|float|bool|list|dict|none|TextPart)$")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": _STATUS_TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param, code), status_code=status)


def service_error_response(error: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_seconds)} if isinstance(error, OverloadedError) else None
    return JSONResponse(error.body(), status_code=error.status_code, headers=headers)


def _describe_validation(error: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_param: str | None = None
    for problem in error.errors():
        location = [str(part) for part in problem.get("loc", ()) if part != "body"]
        if problem.get("type") == "json_invalid":
            return f"The request body is not valid JSON: {problem.get('msg')}", None
        location = [part for part in location if not _UNION_TAG.search(part)]
        param = ".".join(location) or None
        first_param = first_param or param
        problems.append(f"{param or 'body'}: {problem.get('msg')}")
    return "Invalid request: " + "; ".join(dict.fromkeys(problems)), first_param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
        return service_error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(error)
        return error_response(message, 400, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404 and error.detail == "Not Found":
            message = f"Unknown route {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(message, error.status_code), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(f"Internal server error: {type(error).__name__}", 500)
