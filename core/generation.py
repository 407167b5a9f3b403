"""The generation core: one implementation, for every protocol, of what turns a request into text.

`GenerationCore.start(request)` leases the model, renders and tokenizes the prompt (off the event
loop), checks it against the context, compiles the output constraint, and runs the engine up to
its first event, so that every error known before the first token is raised here, before an
adapter sends anything. The `Generation` it returns yields internal events: text, reasoning, tool
calls, and one `Finish` with the usage. Stop strings, reasoning markers, tool-call detection and
metrics are applied here once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backends.base import (
    ConstraintError,
    ConstraintSpec,
    EngineError,
    EngineOverloadedError,
    EngineRefusedError,
    EngineUnavailableError,
    GenerationRequest,
    SamplingParams,
)
from chat_formats import TemplateRenderError, render_prompt
from chat_formats.registry import ToolSupport
from core.answer import new_call_id, split_text, tool_events
from core.prompt import guard_for, protect, template_messages
from core.reasoning import ReasoningSplitter
from core.remote import conversation_key, service_error
from core.schemas import check_grammar
from core.stop_strings import StopStringMatcher
from core.tool_stream import ToolCallDetector
from core.tools import ToolPlan, plan_tools, react_messages
from core.types import (
    Completion,
    Event,
    Finish,
    GenerationInput,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from service import flight_recorder
from service.errors import (
    ContextLengthExceededError,
    GenerationFailedError,
    InvalidRequestError,
    ModelNotReadyError,
    OverloadedError,
    UpstreamUnavailableError,
)
from service.model_manager import Lease

if TYPE_CHECKING:
    from service.gguf_client import GGUFClient

logger = logging.getLogger(__name__)

# llama.cpp's server defaults, used where a request leaves a field out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05

CONSTRAINT_COMPILE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Prepared:
    lease: Lease
    request: GenerationInput
    engine_request: GenerationRequest
    prompt: str | None  # None when the client sent token ids
    plan: ToolPlan
    stops: tuple[str, ...]  # the client's
    format_stops: tuple[str, ...]  # the chat format's end-of-turn text
    load_seconds: float

    @property
    def request_id(self) -> str:
        return self.engine_request.request_id

    @property
    def prompt_tokens(self) -> int:
        return len(self.engine_request.prompt_token_ids)


class Generation:
    """A started generation. Iterate it for events; closing it (or leaving `async with`) aborts
    the engine's work and releases the model."""

    def __init__(self, prepared: Prepared, events: AsyncIterator[Event]) -> None:
        self.prepared = prepared
        self.id = prepared.request_id
        self.model = prepared.lease.model.entry.alias
        self.created = int(time.time())
        self._events = events
        self._first: Event | None = None
        self._closed = False

    async def _begin(self) -> None:
        self._first = await anext(self._events)  # type: ignore[call-overload]

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            async for event in self._events:
                yield event
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            self.prepared.lease.release()

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def collect(self) -> Completion:
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        finish: Finish | None = None
        async for event in self:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
            elif isinstance(event, ToolCallEvent):
                calls.append(event.call)
            else:
                finish = event
        if finish is None:
            raise GenerationFailedError("the engine ended the generation without a finish reason")
        return Completion("".join(text), "".join(reasoning), tuple(calls), finish)


class GenerationCore:
    def __init__(self, client: GGUFClient) -> None:
        self._client = client

    # ---- entry points -------------------------------------------------------------------------

    async def start(self, request: GenerationInput) -> Generation:
        """Prepare and start a generation, up to its first event. When the model cannot serve
        (its upstreams are all down, it failed to load) and names a fallback model, that one
        serves instead; the answer then names the fallback."""
        try:
            return await self._start(request)
        except (UpstreamUnavailableError, ModelNotReadyError) as error:
            fallback = self._client.models.fallback_for(request.model, error.message)
            if fallback is None:
                raise
            return await self._start(dataclasses.replace(request, model=fallback))

    async def _start(self, request: GenerationInput) -> Generation:
        lease, load_seconds = await self.acquire(request.model, loading=request.warm)
        try:
            prepared = await self._prepare(lease, request, load_seconds)
        except EngineError as error:
            lease.release()
            raise service_error(error) from error
        except BaseException:
            lease.release()
            raise
        generation = Generation(prepared, self._run(prepared))
        try:
            await generation._begin()
        except BaseException:
            await generation.aclose()
            raise
        return generation

    async def acquire(self, model: str | None, loading: bool = False) -> tuple[Lease, float]:
        """A lease on the model a request names, and the seconds spent waiting for it to load.
        `loading`: for the server's own warm-up, which runs before the server is ready."""
        client = self._client
        if not client.ready and not loading:
            raise ModelNotReadyError(client.failure or client.loading_stage)
        started = time.perf_counter()
        lease = await client.models.acquire(model)
        waited = time.perf_counter() - started
        return lease, waited if waited > 0.05 else 0.0

    async def render(self, request: GenerationInput) -> tuple[str | None, list[int], int]:
        """The prompt text and token ids a request gives, and the model's context (/tokenize)."""
        lease, _ = await self.acquire(request.model)
        try:
            prompt, ids, _plan = await asyncio.to_thread(self._render, lease, request)
            return prompt, ids, lease.info.context_length
        except EngineError as error:
            raise service_error(error) from error
        finally:
            lease.release()

    # ---- preparation (off the event loop) ----------------------------------------------------

    async def _prepare(self, lease: Lease, request: GenerationInput, load_seconds: float) -> Prepared:
        prompt, ids, plan = await asyncio.to_thread(self._render, lease, request)
        max_tokens = self._max_tokens(lease, request, len(ids))
        constraint = await self._compile(lease, request, plan)
        sampling = _sampling(request, max_tokens, constraint)
        request_id = uuid.uuid4().hex  # adapters show it with their own prefix (chatcmpl-, resp_, msg_)
        priority = lease.model.entry.priority if request.priority is None else request.priority
        affinity = (request.cache_key or conversation_key(request)) if lease.info.capabilities.routing else None
        conversation = request if lease.info.capabilities.messages else None
        engine_request = GenerationRequest(
            request_id, ids, sampling, cache_key=request.cache_key, priority=priority, warm=request.warm, prompt_text=prompt,
            affinity=affinity, conversation=conversation,
        )
        format_stops = lease.chat_format.stop if request.messages else ()
        return Prepared(lease, request, engine_request, prompt, plan, request.stop, format_stops, load_seconds)

    def _render(self, lease: Lease, request: GenerationInput) -> tuple[str | None, list[int], ToolPlan]:
        plan = plan_tools(request, lease.chat_format, self._tool_support(lease))
        guard = guard_for(lease.info.special_tokens)
        if request.messages:
            messages = protect(guard, template_messages(request.messages))
            tools = protect(guard, plan.template_tools) if plan.template_tools else None
            if plan.react and plan.react_tools:
                messages = react_messages(messages, protect(guard, plan.react_tools))
            try:
                prompt = render_prompt(lease.chat_format, messages, tools=tools, eos_token=lease.info.eos_token)
            except TemplateRenderError as error:
                raise InvalidRequestError(str(error), param=request.names.messages) from error
            except RecursionError:
                raise InvalidRequestError("the messages nest too deeply to render", param=request.names.messages) from None
        elif request.prompt_ids is not None:
            return None, checked_ids(request.prompt_ids, lease.info.vocab_size), plan
        else:
            prompt = request.prompt or ""
        check_text(prompt, request.names.messages if request.messages else "prompt")
        ids = guard.tokenize(prompt, lease.engine.tokenize)
        return guard.restore(prompt), ids, plan

    def _max_tokens(self, lease: Lease, request: GenerationInput, prompt_tokens: int) -> int:
        context = lease.info.context_length
        if prompt_tokens >= context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{prompt_tokens} tokens. Shorten the messages or raise the model's context size.",
                param=request.names.messages,
            )
        if request.max_tokens is None:
            default = lease.model.entry.max_tokens or self._client.settings.max_tokens
            return min(default, context - prompt_tokens)
        if prompt_tokens + request.max_tokens > context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context} tokens, but the prompt is "
                f"{prompt_tokens} tokens and {request.names.max_tokens} asks for {request.max_tokens} more "
                f"({prompt_tokens + request.max_tokens} in all). Lower {request.names.max_tokens} or shorten the messages.",
                param=request.names.max_tokens,
            )
        return request.max_tokens

    async def _compile(self, lease: Lease, request: GenerationInput, plan: ToolPlan) -> object | None:
        """The engine's compiled form of the constraint, built in a worker thread with a time bound.
        A constraint the engine cannot compile is a 400 naming the field."""
        constraint = plan.constraint
        if constraint is None:
            return None
        names = request.names
        param = names.grammar if constraint.kind == "grammar" else names.tool_choice if plan.forced else names.output
        if not lease.info.capabilities.grammar:
            raise InvalidRequestError(
                f"the {lease.engine.name} engine cannot constrain output, which {param} needs", param=param
            )
        if constraint.kind == "grammar":
            check_grammar(constraint.grammar or "", param)
        spec = ConstraintSpec(constraint.kind, constraint.schema, constraint.grammar)
        try:
            return await asyncio.wait_for(asyncio.to_thread(lease.engine.compile_constraint, spec), CONSTRAINT_COMPILE_TIMEOUT_SECONDS)
        except ConstraintError as error:
            raise InvalidRequestError(f"{param} cannot be used: {error}", param=param) from None
        except TimeoutError:
            raise InvalidRequestError(
                f"{param} is too complex: compiling it took more than {CONSTRAINT_COMPILE_TIMEOUT_SECONDS:.0f} s", param=param
            ) from None

    def _tool_support(self, lease: Lease) -> ToolSupport:
        setting = lease.model.entry.tool_support
        return lease.chat_format.tool_support if setting == "auto" else setting

    # ---- running -------------------------------------------------------------------------------

    async def _run(self, prepared: Prepared) -> AsyncIterator[Event]:
        plan = prepared.plan
        stops = StopStringMatcher((*prepared.stops, *prepared.format_stops))
        # An engine that passes the conversation on gets reasoning and tool calls parsed by its server.
        passthrough = prepared.lease.info.capabilities.messages
        markers = prepared.lease.chat_format.reasoning if prepared.request.messages and not passthrough else None
        splitter = ReasoningSplitter(*markers) if markers else None
        detector = ToolCallDetector(plan.parser, plan.forced) if plan.parser and not passthrough else None
        passed_calls = 0
        deltas = prepared.lease.engine.generate(prepared.engine_request)
        started = time.perf_counter()
        first_token_at: float | None = None
        flight_recorder.begin(
            prepared.request_id, prepared.lease.model.entry.alias,
            f"{prepared.lease.engine.name} engine, {prepared.prompt_tokens} prompt tokens",
        )
        counted = reasoning_tokens = 0
        try:
            async for delta in deltas:
                first_token_at = first_token_at or time.perf_counter()
                text = stops.feed(delta.text)
                finished = stops.stopped or delta.finish_reason is not None
                events = split_text(text + (stops.flush() if finished else ""), splitter, detector, finished)
                if events and all(isinstance(event, ReasoningDelta) for event in events):
                    reasoning_tokens += delta.completion_tokens - counted
                counted = delta.completion_tokens
                if delta.reasoning:
                    yield ReasoningDelta(delta.reasoning)
                for event in events:
                    yield event
                for name, arguments in delta.calls:
                    yield ToolCallEvent(passed_calls, _passed_call(name, arguments))
                    passed_calls += 1
                if not finished:
                    continue
                now = time.perf_counter()
                usage = Usage(
                    # A passed-on conversation was counted here by estimate; its server's count is exact.
                    prompt_tokens=delta.prompt_tokens if passthrough and delta.prompt_tokens else prepared.prompt_tokens,
                    completion_tokens=delta.completion_tokens,
                    cached_tokens=delta.cached_tokens,
                    reasoning_tokens=reasoning_tokens,
                    prompt_seconds=first_token_at - started,
                    generation_seconds=now - first_token_at,
                    load_seconds=prepared.load_seconds,
                )
                self._client.metrics.observe_generation(
                    prepared.lease.model.entry.alias, usage.prompt_seconds, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
                    delta.cache_source, usage.generation_seconds,
                )
                _log_finished(prepared, usage)
                reason = "stop" if stops.stopped else delta.finish_reason
                if passed_calls and reason != "length":
                    reason = "tool_calls"
                if detector is not None:
                    for event in tool_events(detector, plan, reason == "length"):
                        if isinstance(event, ToolCallEvent) and reason != "length":
                            reason = "tool_calls"
                        yield event
                matched = stops.matched if stops.matched in prepared.stops else None
                yield Finish(reason, usage, matched)  # type: ignore[arg-type]
                return
        except EngineOverloadedError as error:
            raise OverloadedError(str(error), error.retry_after_seconds) from error
        except ConstraintError as error:
            raise InvalidRequestError(f"the output constraint cannot be used: {error}", param=prepared.request.names.output) from error
        except (EngineUnavailableError, EngineRefusedError) as error:
            # The client gets why (503, 504, 400); a fallback serving instead is logged where it is chosen.
            raise service_error(error) from error
        except EngineError as error:
            logger.exception("generation %s failed", prepared.request_id)
            raise GenerationFailedError(f"generation failed: {error}") from error
        finally:
            try:
                await deltas.aclose()  # type: ignore[attr-defined]
            finally:
                flight_recorder.end(prepared.request_id)
        raise GenerationFailedError("the engine ended the generation without a finish reason")


def _passed_call(name: str, arguments: str) -> ToolCall:
    """A tool call an engine's server parsed (a chat-only upstream), arguments as JSON text."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return ToolCall(new_call_id(), name, {}, arguments, complete=False)
    return ToolCall(new_call_id(), name, parsed, json.dumps(parsed, ensure_ascii=False))


def checked_ids(ids: tuple[int, ...], vocab_size: int) -> list[int]:
    if not ids:
        raise InvalidRequestError("the prompt has no token ids; send at least one", param="prompt")
    if vocab_size and max(ids) >= vocab_size:
        raise InvalidRequestError(f"the prompt has a token id outside the vocabulary (0 to {vocab_size - 1})", param="prompt")
    return list(ids)


def check_text(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequestError(
            f"the text contains a lone UTF-16 surrogate ({text[error.start]!r} at character {error.start} of the "
            "prompt); send valid Unicode",
            param=param,
        ) from None


def _sampling(request: GenerationInput, max_tokens: int, constraint: object | None) -> SamplingParams:
    fields = request.sampling

    def pick(value: float | int | None, default: float | int) -> float | int:
        return default if value is None else value

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=pick(fields.temperature, DEFAULT_TEMPERATURE),
        top_p=pick(fields.top_p, DEFAULT_TOP_P),
        top_k=int(pick(fields.top_k, DEFAULT_TOP_K)),
        min_p=pick(fields.min_p, DEFAULT_MIN_P),
        seed=fields.seed,
        presence_penalty=pick(fields.presence_penalty, 0.0),
        frequency_penalty=pick(fields.frequency_penalty, 0.0),
        repeat_penalty=pick(fields.repeat_penalty, 1.0),
        constraint=constraint,
    )


def _log_finished(prepared: Prepared, usage: Usage) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s: %d prompt tokens (%d cached), %d generated, ttft %.3f s, %.1f tokens/s",
            prepared.request_id, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
            usage.prompt_seconds, max(usage.completion_tokens - 1, 0) / max(usage.generation_seconds, 1e-9),
        )
