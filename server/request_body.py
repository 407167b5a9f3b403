"""Checks on a request body before the application parses it: its size (413) and, for requests
from a web page, its media type (415). The size is checked from Content-Length before any byte is read, and counted as a chunked
body streams in, so an oversized body is never held in memory."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ErrorDetail, error_response

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# Refused responses close the connection: the rest of the body is not worth reading.
_CLOSE = {"Connection": "close"}


class RequestBodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit. An HTTPException, so FastAPI's
    body parsing lets it through to the error handlers, which answer in the client's protocol."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit), headers=_CLOSE)


def _too_large(limit: int, size: int | None = None) -> str:
    told = f"is {size} bytes" if size is not None else "is larger than that"
    return (
        f"The request body {told}; this server accepts at most {limit} bytes (JARVIS_MAX_BODY_BYTES). "
        "Send a shorter prompt or fewer inputs, or raise JARVIS_MAX_BODY_BYTES"
    )


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class RequestBodyMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check_headers(scope)
        if problem is not None:
            headers = _CLOSE if problem.status == 413 else None
            await error_response(scope["path"], problem, headers)(scope, receive, send)
            return
        received = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestBodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except RequestBodyTooLarge as error:
            if response_started:  # the answer has begun: the server closes the connection
                raise
            detail = ErrorDetail(error.status_code, str(error.detail))
            await error_response(scope["path"], detail, _CLOSE)(scope, receive, send)

    def _check_headers(self, scope: Scope) -> ErrorDetail | None:
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return ErrorDetail(400, f"Content-Length must be a whole number of bytes, got {declared!r}")
            if int(declared) > self.max_bytes:
                return ErrorDetail(413, _too_large(self.max_bytes, int(declared)))
        has_body = (declared is not None and int(declared) > 0) or "transfer-encoding" in headers
        content_type = headers.get("content-type")
        # A web page can POST a form or text/plain to this server without a CORS preflight; it is
        # refused. Clients that are not browsers send no Origin: their JSON is read whatever its
        # label (Ollama's documentation uses `curl -d`, which labels the body a form).
        from_a_page = "origin" in headers
        if has_body and from_a_page and scope["method"] in _METHODS_WITH_BODY and content_type and not _is_json(content_type):
            return ErrorDetail(
                415,
                f"The request body must be JSON: send it with 'Content-Type: application/json' (got {content_type!r})",
            )
        return None
