"""OpenAI completions (raw text in, text out): the request to the core's input, and the events to
`text_completion` objects and streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from core.generation import Generation
from core.types import Completion, Finish, GenerationInput, TextDelta
from protocols.openai.chat import output_of, sampling_of, usage_body
from protocols.openai.schema import CompletionRequest
from protocols.tolerance import log_unknown_fields

JSON = dict[str, Any]


def completion_input(request: CompletionRequest) -> GenerationInput:
    log_unknown_fields(request)
    return GenerationInput(
        model=request.model,
        prompt=request.prompt_text(),
        prompt_ids=request.prompt_ids(),
        output=output_of(request),
        sampling=sampling_of(request),
        max_tokens=request.max_tokens,
        stop=tuple(request.stop_list()),
        cache_key=request.user,
        priority=request.priority,
    )


class CompletionRenderer:
    def __init__(self, generation: Generation) -> None:
        self._generation = generation

    def _body(self, choices: list[JSON]) -> JSON:
        generation = self._generation
        return {
            "id": f"cmpl-{generation.id.removeprefix('gen-')}",
            "object": "text_completion",
            "created": generation.created,
            "model": generation.model,
            "choices": choices,
        }

    @staticmethod
    def _choice(text: str, finish_reason: str | None) -> JSON:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    def whole(self, completion: Completion) -> JSON:
        return {**self._body([self._choice(completion.text, completion.finish.reason)]), "usage": usage_body(completion.finish.usage)}

    async def stream(self, include_usage: bool) -> AsyncIterator[JSON]:
        async for event in self._generation:
            if isinstance(event, TextDelta):
                yield self._body([self._choice(event.text, None)])
            elif isinstance(event, Finish):
                yield self._body([self._choice("", event.reason)])
                if include_usage:
                    yield {**self._body([]), "usage": usage_body(event.usage)}
