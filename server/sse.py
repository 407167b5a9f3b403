"""Streamed responses for every protocol: each protocol says how one of its chunks, its error
event and its end marker are written (SSE `data:` lines, SSE with `event:` names, NDJSON); this
module runs the stream, turns a failure after the first byte into the protocol's error event,
and always closes the generation behind it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi.responses import StreamingResponse

from server.errors import ErrorDetail, detail_of
from service.errors import ServiceError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamFormat:
    media_type: str
    encode: Callable[[dict[str, object]], bytes]
    error: Callable[[ErrorDetail], bytes]  # the event that ends a stream which failed
    done: bytes = b""  # written after the last chunk of a stream that did not fail


def json_text(payload: object) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def data_line(payload: object) -> bytes:
    """One SSE event with only a data line: what OpenAI clients parse."""
    return f"data: {json_text(payload)}\n\n".encode()


def named_event(payload: dict[str, object]) -> bytes:
    """One SSE event named by the payload's `type` (OpenAI Responses, Anthropic Messages)."""
    return f"event: {payload['type']}\ndata: {json_text(payload)}\n\n".encode()


async def _encode(chunks: AsyncIterator[dict[str, object]], form: StreamFormat) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield form.encode(chunk)
    except ServiceError as error:
        # Headers are gone: the error travels as the last event instead of a status.
        yield form.error(detail_of(error))
        return
    except Exception as error:
        logger.exception("stream failed")
        yield form.error(ErrorDetail(500, f"Internal server error: {type(error).__name__}"))
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    if form.done:
        yield form.done


def stream_response(chunks: AsyncIterator[dict[str, object]], form: StreamFormat) -> StreamingResponse:
    return StreamingResponse(
        _encode(chunks, form),
        media_type=form.media_type,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
