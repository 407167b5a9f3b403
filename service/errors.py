"""Errors the service raises, each with its HTTP status, an OpenAI-style type, and the parameter
and code it concerns; each protocol renders them in its own error body (server/errors.py)."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFoundError(ServiceError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model {model!r} does not exist", param="model", code="model_not_found")


class ModelNotReadyError(ServiceError):
    status_code = 503
    error_type = "server_error"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The model is not ready: {reason}", code="model_not_ready")


class OverloadedError(ServiceError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message, code="server_overloaded")
        self.retry_after_seconds = retry_after_seconds


class GenerationFailedError(ServiceError):
    status_code = 500
    error_type = "server_error"


class UpstreamUnavailableError(ServiceError):
    """A remote model's upstreams are all down, or each failed before the first token."""

    status_code = 503
    error_type = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_unavailable")


class UpstreamTimeoutError(UpstreamUnavailableError):
    """A remote model's upstream did not answer within its timeout."""

    status_code = 504

    def __init__(self, message: str) -> None:
        ServiceError.__init__(self, message, code="upstream_timeout")
