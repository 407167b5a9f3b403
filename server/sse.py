"""Server-sent events the way OpenAI clients parse them: only `data: {json}` lines and a final
`data: [DONE]`. No comments, pings or event names."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from server.errors import ErrorDetail, detail_of, openai_error
from service.errors import ServiceError

logger = logging.getLogger(__name__)


def _event(payload: object) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def _encode(chunks: AsyncIterator[dict[str, object]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield _event(chunk)
    except ServiceError as error:
        # Headers are gone: the error travels as the last event instead of a status.
        yield _event(openai_error(detail_of(error)))
        return
    except Exception as error:
        logger.exception("stream failed")
        yield _event(openai_error(ErrorDetail(500, f"Internal server error: {type(error).__name__}")))
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def sse_response(chunks: AsyncIterator[dict[str, object]]) -> StreamingResponse:
    return StreamingResponse(
        _encode(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
