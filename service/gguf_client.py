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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from backends import choose_engine
from backends.base import Delta, Engine, EngineError, EngineOverloadedError, GenerationRequest, SamplingParams
from chat_formats import TemplateRenderError, render_prompt
from chat_formats.registry import ToolSupport
from service import responses
from service.errors import (
    ContextLengthExceededError,
    GenerationFailedError,
    InvalidRequestError,
    ModelNotReadyError,
    OverloadedError,
)
from service.audit import AuditLog
from service.metrics import Metrics
from service.model_manager import EngineFactory, Lease, ManagedModel, ModelManager, ModelState
from service.model_registry import load_registry
from service.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
    TokenizeRequest,
)
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
    lease: Lease
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
    """Resolves the model a request names, renders its prompt, runs it on that model's engine
    and shapes the OpenAI answer. `engine` (tests) serves every entry with one given engine."""

    def __init__(
        self, settings: Settings, engine: Engine | None = None, engine_factory: EngineFactory | None = None
    ) -> None:
        engine_setting, self.engine_choice_reason = choose_engine(settings.inference_engine)
        if engine_setting != settings.inference_engine:
            settings = settings.model_copy(update={"inference_engine": engine_setting})
            logger.info("engine chosen: %s (%s)", engine_setting, self.engine_choice_reason)
        self._settings = settings
        if engine is not None:
            engine_factory = lambda entry, config: engine  # noqa: E731
        self.models = ModelManager(settings, load_registry(settings), engine_factory)
        self.metrics = Metrics(lambda: self.models.models)
        self.audit = AuditLog(settings.audit_log_path)
        self.started_at = time.time()
        self.stage = "starting"
        self.failure: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.stage == "ready"

    @property
    def engine_name(self) -> str:
        return self.models.default.running_engine

    @property
    def loading_stage(self) -> str:
        return self.models.default.stage if self.stage == "starting" else self.stage

    async def start(self) -> None:
        """Load the default model; the server is ready when it is."""
        default = self.models.default
        await self.models.start_loading(default)
        if default.state != ModelState.LOADED:
            self.stage = "failed"
            self.failure = default.failure
            raise RuntimeError(default.failure)
        self.stage = "ready"
        self.models.start_keep_alive()

    async def close(self) -> None:
        await self.models.close()
        self.stage = "stopped"

    # ---- models ----------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Every name a request may use, entry by entry."""
        return [name for model in self.models.models for name in model.entry.names()]

    def model_cards(self) -> list[tuple[str, ManagedModel]]:
        return [(name, model) for model in self.models.models for name in model.entry.names()]

    # ---- chat ------------------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> dict[str, object]:
        lease = await self._acquire(request)
        try:
            prepared = self._prepare_chat(request, lease)
            text, last = await _collect(self._events(prepared))
        finally:
            lease.release()
        detector = prepared.tool_detector()
        if detector is None:
            return responses.chat_completion(prepared, text, last)
        content = detector.feed(text)
        rest, parsed = detector.finish()
        return responses.chat_completion(prepared, content + rest, last, parsed)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, object]]:
        """Chunks of a streamed chat completion. Errors known before the first token (bad input,
        context overflow, a full queue) are raised here, before any chunk."""
        lease = await self._acquire(request)
        prepared, first, events = await self._start_stream(lease, lambda: self._prepare_chat(request, lease))
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
            prepared.lease.release()

    def _prepare_chat(self, request: ChatCompletionRequest, lease: Lease) -> PreparedRequest:
        _log_unknown_fields(request, *request.messages)
        prompt, plan = self._render_chat(request, lease)
        if plan.constraint is not None and not lease.info.capabilities.grammar:
            raise InvalidRequestError(
                f"the {lease.engine.name} engine cannot constrain output to a JSON schema, which "
                "response_format and forced tool calls need",
                param="response_format" if request.response_format else "tool_choice",
            )
        stops = (*request.stop_list(), *lease.chat_format.stop)
        prepared = self._prepare(
            lease, request, prompt, stops, request.requested_max_tokens(), "chatcmpl", json_schema=plan.constraint
        )
        return dataclasses.replace(prepared, tools=plan)

    def _render_chat(self, request: ChatCompletionRequest, lease: Lease) -> tuple[str, ToolPlan]:
        """The prompt text of a chat request, as the model's chat format writes it."""
        plan = plan_tools(request, lease.chat_format, self._tool_support(lease))
        messages = _template_messages(request.messages)
        if plan.react and plan.react_tools:
            messages = react_messages(messages, plan.react_tools)
        try:
            prompt = render_prompt(lease.chat_format, messages, tools=plan.template_tools, eos_token=lease.info.eos_token)
        except TemplateRenderError as error:
            raise InvalidRequestError(str(error), param="messages") from error
        return prompt, plan

    async def tokenize(self, request: TokenizeRequest) -> dict[str, object]:
        """Token ids of a prompt or a rendered chat, as the engine will see them."""
        lease = await self._acquire(request)
        try:
            if request.messages is not None:
                chat = ChatCompletionRequest(model=request.model, messages=request.messages, tools=request.tools)
                prompt, _ = self._render_chat(chat, lease)
            else:
                prompt = request.prompt or ""
            tokens = lease.engine.tokenize(prompt)
            return {"tokens": tokens, "count": len(tokens), "max_model_len": lease.info.context_length, "prompt": prompt}
        finally:
            lease.release()

    @staticmethod
    def _tool_support(lease: Lease) -> ToolSupport:
        setting = lease.model.entry.tool_support
        return lease.chat_format.tool_support if setting == "auto" else setting

    # ---- text completions ------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> dict[str, object]:
        lease = await self._acquire(request)
        try:
            prepared = self._prepare_completion(request, lease)
            text, last = await _collect(self._events(prepared))
        finally:
            lease.release()
        return responses.completion(prepared, text, last)

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[dict[str, object]]:
        lease = await self._acquire(request)
        prepared, first, events = await self._start_stream(lease, lambda: self._prepare_completion(request, lease))
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
            prepared.lease.release()

    def _prepare_completion(self, request: CompletionRequest, lease: Lease) -> PreparedRequest:
        _log_unknown_fields(request)
        return self._prepare(lease, request, request.prompt_text(), tuple(request.stop_list()), request.max_tokens, "cmpl")

    # ---- embeddings ------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> dict[str, object]:
        _log_unknown_fields(request)
        lease = await self._acquire(request)
        try:
            if not lease.info.capabilities.embeddings:
                raise InvalidRequestError(
                    f"the model {lease.model.entry.alias!r} on the {lease.engine.name} engine cannot make "
                    "embeddings; use a model whose engine supports them",
                    param="model",
                )
            texts = request.texts()
            counts = [len(lease.engine.tokenize(text)) for text in texts]
            for index, count in enumerate(counts):
                if count > lease.info.context_length:
                    raise ContextLengthExceededError(
                        f"input {index} is {count} tokens, more than the model's context of "
                        f"{lease.info.context_length} tokens"
                    )
            vectors = await lease.engine.embed(texts)
        finally:
            lease.release()
        return responses.embeddings(lease.model.entry.alias, vectors, sum(counts), request.encoding_format)

    # ---- shared ----------------------------------------------------------------------------

    async def _acquire(self, request: SamplingFields | EmbeddingRequest | TokenizeRequest) -> Lease:
        if not self.ready:
            raise ModelNotReadyError(self.failure or self.loading_stage)
        return await self.models.acquire(request.model)

    async def _start_stream(
        self, lease: Lease, prepare: Callable[[], PreparedRequest]
    ) -> tuple[PreparedRequest, TextEvent, AsyncIterator[TextEvent]]:
        """Prepare and run a stream up to its first event, so errors surface before any chunk."""
        events: AsyncIterator[TextEvent] | None = None
        try:
            prepared = prepare()
            events = self._events(prepared)
            return prepared, await anext(events), events
        except BaseException:
            if events is not None:
                await events.aclose()  # type: ignore[attr-defined]
            lease.release()
            raise

    def _prepare(
        self,
        lease: Lease,
        request: SamplingFields,
        prompt: str,
        stops: tuple[str, ...],
        max_tokens: int | None,
        prefix: str,
        json_schema: dict | None = None,
    ) -> PreparedRequest:
        prompt_ids = lease.engine.tokenize(prompt)
        context = lease.info.context_length
        if len(prompt_ids) >= context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{len(prompt_ids)} tokens. Shorten the messages or raise JARVIS_CONTEXT_SIZE."
            )
        if max_tokens is None:
            default_max_tokens = lease.model.entry.max_tokens or self._settings.max_tokens
            max_tokens = min(default_max_tokens, context - len(prompt_ids))
        elif len(prompt_ids) + max_tokens > context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{len(prompt_ids)} tokens and max_tokens asks for {max_tokens} more "
                f"({len(prompt_ids) + max_tokens} in all). Lower max_tokens or shorten the messages."
            )
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        sampling = dataclasses.replace(_sampling(request, max_tokens), json_schema=json_schema)
        return PreparedRequest(
            lease=lease,
            request_id=request_id,
            created=int(time.time()),
            model=lease.model.entry.alias,
            generation=GenerationRequest(request_id, prompt_ids, sampling, cache_key=request.user),
            stops=stops,
            include_usage=request.include_usage(),
        )

    async def _events(self, prepared: PreparedRequest) -> AsyncIterator[TextEvent]:
        matcher = StopStringMatcher(prepared.stops)
        deltas = prepared.lease.engine.generate(prepared.generation)
        started = time.perf_counter()
        first_token_at: float | None = None
        try:
            async for delta in deltas:
                first_token_at = first_token_at or time.perf_counter()
                text = matcher.feed(delta.text)
                if matcher.stopped or delta.finish_reason:
                    finish_reason = "stop" if matcher.stopped else delta.finish_reason
                    _log_finished(prepared, delta, started, first_token_at)
                    self.metrics.observe_generation(
                        prepared.model, first_token_at - started, len(prepared.generation.prompt_token_ids),
                        delta.cached_tokens, delta.completion_tokens,
                    )
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
