"""What the core does for engines whose model runs on other servers (a remote model): their
failures as the errors a client gets, and the key that keeps a conversation on one upstream."""

from __future__ import annotations

import hashlib
import json

from backends.base import (
    ConstraintError,
    EngineError,
    EngineOverloadedError,
    EngineRefusedError,
    EngineTimeoutError,
    EngineUnavailableError,
)
from core.types import GenerationInput
from service.errors import (
    GenerationFailedError,
    InvalidRequestError,
    OverloadedError,
    ServiceError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)


def service_error(error: EngineError) -> ServiceError:
    """An engine's failure as the error a client gets: a remote upstream that is down or too slow
    (503, 504), or that refused the request (400)."""
    if isinstance(error, EngineTimeoutError):
        return UpstreamTimeoutError(str(error))
    if isinstance(error, EngineUnavailableError):
        return UpstreamUnavailableError(str(error))
    if isinstance(error, EngineRefusedError):
        return InvalidRequestError(str(error))
    if isinstance(error, EngineOverloadedError):
        return OverloadedError(str(error), error.retry_after_seconds)
    if isinstance(error, ConstraintError):
        return InvalidRequestError(f"the output constraint cannot be used: {error}")
    return GenerationFailedError(f"generation failed: {error}")


def conversation_key(request: GenerationInput) -> str | None:
    """What keeps a conversation without a `user` on one upstream: its system prompt and tools
    (the prefix an upstream's prompt cache holds)."""
    system = [message.content for message in request.messages if message.role == "system"]
    if not system and not request.tools:
        return None
    tools = sorted((tool.name, tool.description or "", json.dumps(tool.parameters, sort_keys=True)) for tool in request.tools)
    return hashlib.sha256(json.dumps([system, tools]).encode("utf-8")).hexdigest()[:24]
