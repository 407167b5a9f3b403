"""Anthropic Messages routes: `POST /v1/messages` (JSON or SSE with named events) and
`POST /v1/messages/count_tokens`. Every error under /v1/messages has Anthropic's error body."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from protocols.anthropic.convert import count_input, message_input
from protocols.anthropic.errors import anthropic_error
from protocols.anthropic.render import MessageRenderer
from protocols.anthropic.schema import CountTokensRequest, MessagesRequest
from server.dependencies import Core
from server.errors import register_error_format
from server.sse import StreamFormat, named_event, stream_response

router = APIRouter()

PATH_PREFIX = "/v1/messages"
register_error_format(PATH_PREFIX, anthropic_error)

# A stream that fails after it started ends with an `error` event; a whole one ends at message_stop.
ANTHROPIC_STREAM = StreamFormat("text/event-stream", named_event, lambda detail: named_event(anthropic_error(detail)))


@router.post(PATH_PREFIX, response_model=None)
async def create_message(body: MessagesRequest, core: Core) -> dict[str, object] | StreamingResponse:
    converted = message_input(body)
    generation = await core.start(converted.input)
    renderer = MessageRenderer(generation, converted.output)
    if body.stream:
        return stream_response(renderer.events(), ANTHROPIC_STREAM)
    return await renderer.whole()


@router.post(f"{PATH_PREFIX}/count_tokens")
async def count_tokens(body: CountTokensRequest, core: Core) -> dict[str, int]:
    _prompt, ids, _context = await core.render(count_input(body))
    return {"input_tokens": len(ids)}
