"""GGUFClient: the facade between the HTTP layer and the engines.

It picks the engine named by JARVIS_INFERENCE_ENGINE, renders the chat template, checks the
prompt against the context, maps request fields to sampling, applies stop strings and shapes
OpenAI responses and stream chunks. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from backends import create_engine
from backends.base import (
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    EngineInfo,
    EngineOverloadedError,
    GenerationRequest,
    SamplingParams,
)
from chat_formats import ChatFormat, TemplateRenderError, render_prompt, resolve_chat_format
from chat_formats.registry import ToolSupport
from service import responses
from service.errors import (
    ContextLengthExceededError,
    GenerationFailedError,
    InvalidRequestError,
    ModelNotReadyError,
    OverloadedError,
)
from service.model_files import resolve_model
from service.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields
from service.settings import Settings
from service.stop_strings import StopStringMatcher
from service.tool_stream import ToolCallDetector
from service.tools import ToolPlan, plan_tools, react_messages

logger = logging.getLogger(__name__)

# llama.cpp's server defaults, used where a request leaves a field out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05

_TEMPLATE_ROLES = {"developer": "system", "function": "tool"}


@dataclass(frozen=True)
class TextEvent:
    """Text for the client, after stop strings; the last event carries finish_reason and usage."""

    text: str
    finish_reason: str | None = None
    usage: dict[str, object] | None = None


@dataclass(frozen=True)
class PreparedRequest:
    request_id: str
    created: int
    model: str
    generation: GenerationRequest
    stops: tuple[str, ...]
    include_usage: bool
    tools: ToolPlan = ToolPlan()

    def tool_detector(self) -> ToolCallDetector | None:
        return ToolCallDetector(self.tools.parser, self.tools.forced) if self.tools.parser else None


class GGUFClient:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._info: EngineInfo | None = None
        self._chat_format: ChatFormat | None = None
        self.stage = "starting"
        self.failure: str | None = None
        self.load_seconds: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.stage == "ready"

    @property
    def engine_name(self) -> str:
        return self._engine.name if self._engine else self._settings.inference_engine

    async def start(self) -> None:
        started = time.perf_counter()
        try:
            if self._engine is None:
                self.stage = "preparing model"
                model = await asyncio.to_thread(resolve_model, self._settings.model_name, self._settings.cache_dir)
                self._engine = create_engine(self._settings.inference_engine, self._engine_config(model))
            self.stage = "loading model"
            await self._engine.start()
            self._info = self._engine.info()
            self._chat_format = resolve_chat_format(
                self._settings.chat_format, self._info.architecture, self._info.chat_template
            )
        except Exception as error:
            self.stage = "failed"
            self.failure = str(error)
            raise
        self.load_seconds = time.perf_counter() - started
        self.stage = "ready"
        logger.info(
            "model %s ready on %s in %.1f s (context %d, chat format %s)",
            self._info.model_id,
            self._engine.name,
            self.load_seconds,
            self._info.context_length,
            self._chat_format.name,
        )

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()
        self.stage = "stopped"

    def _engine_config(self, model: str) -> EngineConfig:
        settings = self._settings
        return EngineConfig(
            model=model,
            context_size=settings.context_size,
            cache_dir=str(settings.cache_dir),
            n_threads=settings.n_threads,
            n_gpu_layers=settings.n_gpu_layers,
        )

    # ---- models ----------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """The loaded model's id first, then its configured aliases."""
        primary = self._info.model_id if self._info else (self._settings.model_name or "default")
        return [primary, *[alias for alias in self._settings.model_aliases() if alias != primary]]

    # ---- chat ------------------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> dict[str, object]:
        prepared = self._prepare_chat(request)
        text, last = await _collect(self._events(prepared))
        detector = prepared.tool_detector()
        if detector is None:
            return responses.chat_completion(prepared, text, last)
        content = detector.feed(text)
        rest, parsed = detector.finish()
        return responses.chat_completion(prepared, content + rest, last, parsed)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, object]]:
        """Chunks of a streamed chat completion. Errors known before the first token (bad input,
        context overflow, a full queue) are raised by the first `__anext__`, before any chunk."""
        prepared = self._prepare_chat(request)
        events = self._events(prepared)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return self._chat_chunks(prepared, first, events)

    async def _chat_chunks(
        self, prepared: PreparedRequest, first: TextEvent, events: AsyncIterator[TextEvent]
    ) -> AsyncIterator[dict[str, object]]:
        detector = prepared.tool_detector()
        try:
            yield responses.chat_chunk(prepared, {"role": "assistant", "content": ""})
            async for event in _chain(first, events):
                content = detector.feed(event.text) if detector else event.text
                if content:
                    yield responses.chat_chunk(prepared, {"content": content})
                if not event.finish_reason:
                    continue
                finish_reason = event.finish_reason
                if detector:
                    rest, parsed = detector.finish()
                    if rest:
                        yield responses.chat_chunk(prepared, {"content": rest})
                    if parsed:
                        finish_reason = "tool_calls"
                        # One call per chunk, each whole: clients that do not join fragments cope.
                        for entry in responses.tool_call_entries(parsed):
                            yield responses.chat_chunk(prepared, {"tool_calls": [entry]})
                yield responses.chat_chunk(prepared, {}, finish_reason=finish_reason)
                if prepared.include_usage:
                    yield responses.chat_usage_chunk(prepared, event.usage or {})
        finally:
            await events.aclose()

    def _prepare_chat(self, request: ChatCompletionRequest) -> PreparedRequest:
        self._require_ready()
        _log_unknown_fields(request, *request.messages)
        assert self._chat_format is not None and self._info is not None
        plan = plan_tools(request, self._chat_format, self._tool_support())
        if plan.constraint is not None and not self._info.capabilities.grammar:
            raise InvalidRequestError(
                f"the {self.engine_name} engine cannot constrain output to a JSON schema, which "
                "response_format and forced tool calls need",
                param="response_format" if request.response_format else "tool_choice",
            )
        messages = _template_messages(request.messages)
        if plan.react and plan.react_tools:
            messages = react_messages(messages, plan.react_tools)
        try:
            prompt = render_prompt(
                self._chat_format, messages, tools=plan.template_tools, eos_token=self._info.eos_token
            )
        except TemplateRenderError as error:
            raise InvalidRequestError(str(error), param="messages") from error
        stops = (*request.stop_list(), *self._chat_format.stop)
        prepared = self._prepare(
            request, prompt, stops, request.requested_max_tokens(), "chatcmpl", json_schema=plan.constraint
        )
        return dataclasses.replace(prepared, tools=plan)

    def _tool_support(self) -> ToolSupport:
        assert self._chat_format is not None
        setting = self._settings.tool_support
        return self._chat_format.tool_support if setting == "auto" else setting

    # ---- text completions ------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> dict[str, object]:
        prepared = self._prepare_completion(request)
        text, last = await _collect(self._events(prepared))
        return responses.completion(prepared, text, last)

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[dict[str, object]]:
        prepared = self._prepare_completion(request)
        events = self._events(prepared)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return self._completion_chunks(prepared, first, events)

    async def _completion_chunks(
        self, prepared: PreparedRequest, first: TextEvent, events: AsyncIterator[TextEvent]
    ) -> AsyncIterator[dict[str, object]]:
        try:
            async for event in _chain(first, events):
                if event.text or event.finish_reason:
                    yield responses.completion_chunk(prepared, event.text, event.finish_reason)
                if event.finish_reason and prepared.include_usage:
                    yield responses.completion_usage_chunk(prepared, event.usage or {})
        finally:
            await events.aclose()

    def _prepare_completion(self, request: CompletionRequest) -> PreparedRequest:
        self._require_ready()
        _log_unknown_fields(request)
        return self._prepare(request, request.prompt_text(), tuple(request.stop_list()), request.max_tokens, "cmpl")

    # ---- shared ----------------------------------------------------------------------------

    def _require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReadyError(self.failure or self.stage)

    def _prepare(
        self,
        request: SamplingFields,
        prompt: str,
        stops: tuple[str, ...],
        max_tokens: int | None,
        prefix: str,
        json_schema: dict | None = None,
    ) -> PreparedRequest:
        assert self._engine is not None and self._info is not None
        prompt_ids = self._engine.tokenize(prompt)
        context = self._info.context_length
        if len(prompt_ids) >= context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{len(prompt_ids)} tokens. Shorten the messages or raise JARVIS_CONTEXT_SIZE."
            )
        if max_tokens is None:
            max_tokens = min(self._settings.max_tokens, context - len(prompt_ids))
        elif len(prompt_ids) + max_tokens > context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{len(prompt_ids)} tokens and max_tokens asks for {max_tokens} more "
                f"({len(prompt_ids) + max_tokens} in all). Lower max_tokens or shorten the messages."
            )
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        sampling = dataclasses.replace(_sampling(request, max_tokens), json_schema=json_schema)
        return PreparedRequest(
            request_id=request_id,
            created=int(time.time()),
            model=self.model_ids()[0],
            generation=GenerationRequest(request_id, prompt_ids, sampling, cache_key=request.user),
            stops=stops,
            include_usage=request.include_usage(),
        )

    async def _events(self, prepared: PreparedRequest) -> AsyncIterator[TextEvent]:
        assert self._engine is not None
        matcher = StopStringMatcher(prepared.stops)
        deltas = self._engine.generate(prepared.generation)
        started = time.perf_counter()
        first_token_at: float | None = None
        try:
            async for delta in deltas:
                first_token_at = first_token_at or time.perf_counter()
                text = matcher.feed(delta.text)
                if matcher.stopped or delta.finish_reason:
                    finish_reason = "stop" if matcher.stopped else delta.finish_reason
                    _log_finished(prepared, delta, started, first_token_at)
                    yield TextEvent(text + matcher.flush(), finish_reason, _usage(prepared, delta))
                    return
                if text:
                    yield TextEvent(text)
        except EngineOverloadedError as error:
            raise OverloadedError(str(error), error.retry_after_seconds) from error
        except EngineError as error:
            logger.exception("generation %s failed", prepared.request_id)
            raise GenerationFailedError(f"generation failed: {error}") from error
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]
        raise GenerationFailedError("the engine ended the generation without a finish reason")


def _sampling(request: SamplingFields, max_tokens: int) -> SamplingParams:
    def pick(value: float | int | None, default: float | int) -> float | int:
        return default if value is None else value

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=pick(request.temperature, DEFAULT_TEMPERATURE),
        top_p=pick(request.top_p, DEFAULT_TOP_P),
        top_k=int(pick(request.top_k, DEFAULT_TOP_K)),
        min_p=pick(request.min_p, DEFAULT_MIN_P),
        seed=request.seed,
        presence_penalty=pick(request.presence_penalty, 0.0),
        frequency_penalty=pick(request.frequency_penalty, 0.0),
        repeat_penalty=pick(request.repeat_penalty, 1.0),
    )


def _template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as templates expect them: text content, call arguments as objects, and tool
    results carrying the name of the call they answer."""
    call_names: dict[str, str] = {}
    rendered = []
    for index, message in enumerate(messages):
        entry: dict[str, Any] = {"role": _TEMPLATE_ROLES.get(message.role, message.role), "content": message.text()}
        if message.name is not None:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = [_template_call(call, index) for call in message.tool_calls]
            call_names.update({call["id"]: call["function"]["name"] for call in entry["tool_calls"] if call.get("id")})
        if message.role == "tool":
            if not message.tool_call_id:
                raise InvalidRequestError(
                    "a message with role 'tool' needs the tool_call_id of the call it answers",
                    param=f"messages.{index}.tool_call_id",
                )
            entry["tool_call_id"] = message.tool_call_id
            entry.setdefault("name", call_names.get(message.tool_call_id, ""))
        rendered.append(entry)
    return rendered


def _template_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError(
            "each tool call needs function.name", param=f"messages.{index}.tool_calls"
        )
    arguments = function.get("arguments") or "{}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise InvalidRequestError(
                f"the arguments of the call to {function['name']!r} are not valid JSON",
                param=f"messages.{index}.tool_calls",
            ) from None
    return {"id": call.get("id"), "type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _usage(prepared: PreparedRequest, last: Delta) -> dict[str, object]:
    prompt_tokens = len(prepared.generation.prompt_token_ids)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": prompt_tokens + last.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": last.cached_tokens},
    }


def _log_unknown_fields(*models: object) -> None:
    unknown = sorted({name for model in models for name in model.unknown_fields()})  # type: ignore[attr-defined]
    if unknown:
        logger.info("ignoring request fields this server does not use: %s", ", ".join(unknown))


def _log_finished(prepared: PreparedRequest, last: Delta, started: float, first_token_at: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        elapsed = time.perf_counter() - started
        decode_seconds = max(time.perf_counter() - first_token_at, 1e-9)
        logger.debug(
            "%s: %d prompt tokens (%d cached), %d generated, ttft %.3f s, %.1f tokens/s, %.2f s in all",
            prepared.request_id,
            len(prepared.generation.prompt_token_ids),
            last.cached_tokens,
            last.completion_tokens,
            first_token_at - started,
            max(last.completion_tokens - 1, 0) / decode_seconds,
            elapsed,
        )


async def _collect(events: AsyncIterator[TextEvent]) -> tuple[str, TextEvent]:
    parts: list[str] = []
    last = TextEvent("")
    async for event in events:
        parts.append(event.text)
        last = event
    return "".join(parts), last


async def _chain(first: TextEvent, rest: AsyncIterator[TextEvent]) -> AsyncIterator[TextEvent]:
    yield first
    async for event in rest:
        yield event
