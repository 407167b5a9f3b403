"""One request inside the llama.cpp engine: its place in the queue, its slot and position in the
KV cache, its sampler, and the queue its deltas go back to the event loop by."""

from __future__ import annotations

import asyncio
import codecs
import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from backends.base import GenerationRequest
from backends.llama_cpp_sampling import RequestSampler
from backends.prompt_cache import Slot

_ORDER = itertools.count()  # arrival order, the tie-break between requests of equal priority


@dataclass(eq=False)
class Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[object]
    cancelled: bool = False
    slot: Slot | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    position: int = 0  # KV position of the next token fed
    next_token: int | None = None  # sampled, to be fed at the next step
    sampler: RequestSampler | None = None
    sampling: Future[int] | None = None  # a constrained request's token, sampled off the decode thread
    order: int = field(default_factory=lambda: next(_ORDER))
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    generated: int = 0
    cached_tokens: int = 0
    cache_source: str | None = None
    suspended: Any = None  # the KV state of a request preempted by a higher-priority one
    history: list[int] = field(default_factory=list)  # the tokens that state holds
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    @property
    def rank(self) -> tuple[int, int]:
        """Queue order: higher priority first, then first come."""
        return (-self.request.priority, self.order)

    def send(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is gone: nobody is listening any more
            self.cancelled = True
