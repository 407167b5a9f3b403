"""The engine contract: what the facade needs from an inference engine, and nothing more.

An engine runs one model in this process. It takes prompt token ids (the facade renders and
tokenizes the prompt, so both engines see the same ids) and streams back deltas. Heavy imports
(`llama_cpp`, `vllm`, `torch`) happen inside `start()`, never at import of this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling for one request. `temperature == 0` means greedy decoding."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    # The output constraint as the engine compiled it (`Engine.compile_constraint`). None = free text.
    constraint: object | None = None


@dataclass(frozen=True)
class ConstraintSpec:
    """What the output must match: a JSON schema (structured output, forced tool calls) or a
    GBNF grammar."""

    kind: Literal["json_schema", "grammar"]
    schema: dict | None = None
    grammar: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    # Pins a conversation to a cache slot where the engine keeps several (the OpenAI `user` field).
    cache_key: str | None = None
    priority: int = 0  # higher first, where the engine queues
    # The prompt as text (the ids' source), for engines that send text rather than ids (a remote
    # llama.cpp server). None when the client sent token ids.
    prompt_text: str | None = None
    # Keeps a conversation on one server where an engine routes over several (a remote engine):
    # the `user`, else a hash of the system prompt and tools. Set only for engines that route.
    affinity: str | None = None
    # The request as the client sent it (the core's GenerationInput: messages, tools, tool choice,
    # output format), for an engine that passes the conversation on instead of a prompt (a
    # chat-only upstream). Set only for engines with capabilities.messages.
    conversation: Any = None
    warm: bool = False  # a warm prompt: the prefix it leaves cached is counted as "warm"


@dataclass(frozen=True)
class Delta:
    """One step of a generation: new text (possibly empty) and, on the last delta, why it ended.

    `completion_tokens` is the running total of generated tokens. An engine yields exactly one
    delta with `finish_reason` set, and it is the last one.
    """

    text: str
    completion_tokens: int
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_source: str | None = None  # where the cached tokens came from (slot, copy, disk, warm)
    # From engines that pass the conversation on (capabilities.messages): thinking text, and whole
    # tool calls as (name, arguments as JSON text), which that engine's server parsed.
    reasoning: str = ""
    calls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EngineCapabilities:
    grammar: bool = False  # can constrain output to a JSON schema
    embeddings: bool = False
    batching: bool = False  # serves several sequences at once
    routing: bool = False  # spreads requests over several servers (wants GenerationRequest.affinity)
    # Takes the conversation itself, not a prompt (GenerationRequest.conversation); its server
    # renders, tokenizes and parses tool calls, and its token counts are estimates here.
    messages: bool = False


@dataclass(frozen=True)
class EngineInfo:
    model_id: str
    context_length: int
    architecture: str
    capabilities: EngineCapabilities
    # Chat template embedded in the model file, if any (Jinja2 source).
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    # The text of every special (control) token: only the chat template may produce these.
    special_tokens: frozenset[str] = frozenset()
    vocab_size: int = 0


class EngineError(RuntimeError):
    """The engine could not start or failed while generating; the message names cause and fix."""


class ConstraintError(EngineError):
    """The engine cannot compile or apply this output constraint; the request is at fault."""


class EngineUnavailableError(EngineError):
    """No server behind the engine could take the request (every upstream of a remote engine is
    down or failed before the first token). The model's fallback, if it names one, serves instead."""


class EngineTimeoutError(EngineUnavailableError):
    """The server behind the engine did not answer in time (before the first token or between
    tokens); the message names the server and the limit."""


class EngineRefusedError(EngineError):
    """The server behind the engine refused the request itself (a 4xx): the request is at fault."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class EngineOverloadedError(EngineError):
    """Every slot is busy and the wait queue is full; the client should retry later."""

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


@runtime_checkable
class Engine(Protocol):
    """What every engine implements. See the module docstring."""

    name: str

    async def start(self) -> None:
        """Load the model. Raises EngineError with a message naming cause and fix."""

    async def close(self) -> None:
        """Abort running work and free the model."""

    def info(self) -> EngineInfo: ...

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        """Token ids for `text`. `add_bos`: add BOS where the model expects it. `special`: parse
        special-token text (`<start_of_turn>`) as those tokens; False tokenizes it as plain text."""

    def detokenize(self, token_ids: list[int]) -> str:
        """The text of `token_ids` (all below `info().vocab_size`), special tokens left out."""

    def compile_constraint(self, spec: ConstraintSpec) -> object:
        """Build what `SamplingParams.constraint` carries for `spec`. Runs in a worker thread,
        never on the decode thread; raises ConstraintError when the engine cannot use it."""

    def health(self) -> str | None:
        """None while the engine serves; otherwise why it cannot (a dead decode loop)."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas. Closing the iterator early (aclose / task cancel) aborts the work in
        the engine and frees its slot."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One normalized vector per text; only where capabilities.embeddings is true."""


@dataclass(frozen=True)
class EngineConfig:
    """What an engine needs to load its model; built by the facade from the settings."""

    model: str  # a GGUF file path, an HF model id or a local HF folder
    context_size: int
    cache_dir: str  # where converted models and other derived files are kept
    n_threads: int | None = None  # None = all cores
    n_gpu_layers: int = 0
    parallel: int = 1  # sequences served at once, where the engine batches
    # Engine-specific options (for vLLM: tensor_parallel_size, gpu_memory_utilization, ...).
    options: dict[str, object] = field(default_factory=dict)
    # Told what a long start is doing ("converting GGUF for vLLM"), for /health and status.
    on_stage: Callable[[str], None] | None = field(default=None, compare=False)
