"""OpenAI response and stream-chunk shapes."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import TYPE_CHECKING

from chat_formats.tool_parsers import ParsedOutput

if TYPE_CHECKING:
    from service.gguf_client import PreparedRequest, TextEvent

JSON = dict[str, object]


def tool_call_entries(parsed: ParsedOutput) -> list[JSON]:
    return [
        {
            "index": index,
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for index, call in enumerate(parsed.calls)
    ]


def chat_completion(prepared: PreparedRequest, text: str, last: TextEvent, parsed: ParsedOutput | None = None) -> JSON:
    message: JSON = {"role": "assistant", "content": text}
    finish_reason = last.finish_reason
    if parsed is not None:
        message = {"role": "assistant", "content": text or None, "tool_calls": tool_call_entries(parsed)}
        finish_reason = "tool_calls"
    return {
        "id": prepared.request_id,
        "object": "chat.completion",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": last.usage,
    }


def chat_chunk(prepared: PreparedRequest, delta: JSON, finish_reason: str | None = None) -> JSON:
    return {
        "id": prepared.request_id,
        "object": "chat.completion.chunk",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def chat_usage_chunk(prepared: PreparedRequest, usage: JSON) -> JSON:
    return {
        "id": prepared.request_id,
        "object": "chat.completion.chunk",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [],
        "usage": usage,
    }


def completion(prepared: PreparedRequest, text: str, last: TextEvent) -> JSON:
    return {
        "id": prepared.request_id,
        "object": "text_completion",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}],
        "usage": last.usage,
    }


def completion_chunk(prepared: PreparedRequest, text: str, finish_reason: str | None) -> JSON:
    return {
        "id": prepared.request_id,
        "object": "text_completion",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def completion_usage_chunk(prepared: PreparedRequest, usage: JSON) -> JSON:
    return {
        "id": prepared.request_id,
        "object": "text_completion",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [],
        "usage": usage,
    }


def embeddings(model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str) -> JSON:
    def encode(vector: list[float]) -> object:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(vector)} for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
