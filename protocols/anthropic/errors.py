"""Anthropic's error body, `{"type": "error", "error": {"type", "message"}}`, for every error on
its paths, and its error types by HTTP status (Anthropic's API errors reference)."""

from __future__ import annotations

from server.errors import ErrorDetail

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # the model is loading or failed: retry later, as after a 529
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    # Anthropic: other 4xx are invalid_request_error; anything else is its own failure.
    return ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def anthropic_error(detail: ErrorDetail) -> dict[str, object]:
    """The body has no `param`, so the message names the field where it does not already."""
    message = detail.message
    if detail.param and detail.param not in message:
        message = f"{detail.param}: {message}"
    return {"type": "error", "error": {"type": error_type(detail.status), "message": message}}
