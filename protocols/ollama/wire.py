"""What every Ollama response shares: the error body, NDJSON framing, timestamps, done reasons,
the final line's measured durations in nanoseconds, keep_alive durations, and the options that
map onto the core's sampling."""

from __future__ import annotations

import abc
import math
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.types import Completion, Finish, FinishReason, Sampling, Usage, WireNames
from protocols.ollama.schema import Options
from server.errors import ErrorDetail
from server.sse import StreamFormat, json_text

if TYPE_CHECKING:
    from core.generation import Generation

JSON = dict[str, Any]

NANOSECONDS = 1_000_000_000

# How Ollama's requests name the fields the core reports errors about. A forced tool call comes
# from `format` (see protocols/ollama/chat.py), so tool_choice errors name it too.
OLLAMA_NAMES = WireNames(
    messages="messages",
    tools="tools",
    tool_parameters="tools.{index}.function.parameters",
    tool_choice="format",
    output="format",
    output_schema="format",
    max_tokens="options.num_predict",
    grammar="format",
)

# Ollama's defaults (api.DefaultOptions) where a request leaves an option out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.9
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.0
DEFAULT_REPEAT_PENALTY = 1.0

# Ollama has no tool-call finish reason: an answer that is a call ends with "stop".
_DONE_REASONS: dict[FinishReason, str] = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def ollama_error(detail: ErrorDetail) -> JSON:
    return {"error": detail.message}


def ndjson_line(payload: object) -> bytes:
    return (json_text(payload) + "\n").encode()


NDJSON = StreamFormat("application/x-ndjson", ndjson_line, lambda detail: ndjson_line(ollama_error(detail)))


def timestamp(unix_seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes created_at and modified_at."""
    moment = datetime.fromtimestamp(time.time() if unix_seconds is None else unix_seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * NANOSECONDS))


def done_fields(reason: FinishReason, usage: Usage, started: float, load_seconds: float) -> JSON:
    """The last line's fields: why it ended and what it took, measured (`started`: perf_counter
    at the request's arrival; `load_seconds`: the model load the request waited for)."""
    return {
        "done": True,
        "done_reason": _DONE_REASONS[reason],
        "total_duration": nanoseconds(time.perf_counter() - started),
        "load_duration": nanoseconds(max(load_seconds, usage.load_seconds)),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": nanoseconds(usage.prompt_seconds),
        "eval_count": usage.completion_tokens,
        "eval_duration": nanoseconds(usage.generation_seconds),
    }


# ---- keep_alive -----------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("5m", "1h30m", "300ms", "-1s"), as Ollama parses keep_alive."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def keep_alive_seconds(value: float | str | None) -> float | None:
    """A request's keep_alive as the model manager takes it: None = the registry's keep-alive,
    0 = unload after the answer, math.inf = keep loaded (any negative value)."""
    if value is None:
        return None
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    return math.inf if seconds < 0 else seconds


# ---- options ----------------------------------------------------------------------------------


def sampling_of(options: Options | None) -> Sampling:
    options = options or Options()

    def pick(value: float | int | None, default: float | int) -> float | int:
        return default if value is None else value

    return Sampling(
        temperature=pick(options.temperature, DEFAULT_TEMPERATURE),
        top_p=pick(options.top_p, DEFAULT_TOP_P),
        top_k=int(pick(options.top_k, DEFAULT_TOP_K)),
        min_p=pick(options.min_p, DEFAULT_MIN_P),
        seed=options.seed if options.seed is not None and options.seed >= 0 else None,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repeat_penalty=pick(options.repeat_penalty, DEFAULT_REPEAT_PENALTY),
    )


def max_tokens_of(options: Options | None) -> int | None:
    """num_predict > 0 limits the answer; -1 (Ollama: unlimited), -2 (fill the context) and 0 leave
    it to the model's max_tokens (JARVIS_MAX_TOKENS), never beyond the context."""
    value = options.num_predict if options else None
    return value if value is not None and value > 0 else None


class LineRenderer(abc.ABC):
    """What the chat and generate renderers share: the generation, the model name the client asked
    for (Ollama echoes it), whether thinking is shown, and the figures of the last line."""

    def __init__(self, generation: Generation, model: str, think: bool, started: float, load_seconds: float) -> None:
        self._generation = generation
        self._model = model
        self._think = think
        self._started = started
        self._load_seconds = load_seconds

    def _done(self, finish: Finish) -> JSON:
        return done_fields(finish.reason, finish.usage, self._started, self._load_seconds)

    @abc.abstractmethod
    def whole(self, completion: Completion) -> JSON:
        """The whole answer as one body."""

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[JSON]:
        """The answer as NDJSON lines, the last one with the figures."""
