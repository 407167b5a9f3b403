"""Sampling for the llama.cpp engine: a sampler chain per request, and output constraints.

Constraints are GBNF grammars, compiled outside the decode thread (`GrammarCompiler.compile`, in a
worker thread before the request is admitted) and cached: the same tools come with every Home
Assistant request. A request gets a clone of the compiled grammar, so nothing a request carries can
fail inside the decode loop.

Sampling with a grammar is lazy, as llama.cpp's own common sampler does it: the token is sampled
without the grammar, then only that token is checked against it; the grammar is applied to the
whole vocabulary only when the token is rejected. Applying a grammar to a 262k-token vocabulary
at every step is what made constrained decoding slow."""

from __future__ import annotations

import ctypes
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from backends.base import ConstraintError, ConstraintSpec, SamplingParams

PENALTY_LAST_N = 64
GRAMMAR_CACHE_SIZE = 32
# When the sampled token is rejected, the grammar first checks the tokens whose logits are within
# these spreads of the best one (at most WINDOW_CAP of them), and the whole vocabulary only when
# none of those can decide: checking every token is what makes constrained decoding slow.
WINDOW_SPREADS = (10.0, 20.0)
WINDOW_CAP = 4096


@dataclass(frozen=True, eq=False)
class CompiledGrammar:
    """A parsed grammar; requests sample with clones of `prototype`, which is never used itself."""

    gbnf: str
    prototype: Any  # llama_sampler_p


class GrammarCompiler:
    """JSON schemas and GBNF text to parsed llama.cpp grammars, with an LRU cache. Thread-safe."""

    def __init__(self, vocab: Any, capacity: int = GRAMMAR_CACHE_SIZE) -> None:
        self._vocab = vocab
        self._capacity = capacity
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, spec: ConstraintSpec) -> CompiledGrammar:
        gbnf = (spec.grammar or "") if spec.kind == "grammar" else _schema_to_gbnf(spec.schema or {})
        with self._lock:
            cached = self._cache.get(gbnf)
            if cached is not None:
                self._cache.move_to_end(gbnf)
                return cached
        compiled = CompiledGrammar(gbnf, self._parse(gbnf, spec.kind))
        with self._lock:
            self._cache[gbnf] = compiled
            while len(self._cache) > self._capacity:
                _, evicted = self._cache.popitem(last=False)
                _free(evicted.prototype)
        return compiled

    def _parse(self, gbnf: str, kind: str) -> Any:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:  # llama.cpp returns NULL for a grammar it rejects; never add that to a chain
            what = "the grammar does not parse as GBNF with a 'root' rule" if kind == "grammar" else (
                "llama.cpp rejects the grammar built from this schema (an empty enum, or bounds too large to expand?)"
            )
            raise ConstraintError(what)
        return sampler

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        with self._lock:
            for compiled in self._cache.values():
                _free(compiled.prototype)
            self._cache.clear()


def _schema_to_gbnf(schema: dict) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise ConstraintError("the schema nests too deeply to turn into a grammar") from None
    except Exception as error:  # the converter raises AssertionError, ValueError, KeyError, AttributeError ...
        raise ConstraintError(f"llama.cpp cannot turn this schema into a grammar: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, AttributeError) and "'bool'" in text:
        return "boolean subschemas (true/false) are not supported"
    return text[:300]


def _free(sampler: Any) -> None:
    import llama_cpp

    if sampler:
        llama_cpp.llama_sampler_free(sampler)


class RequestSampler:
    """The sampler of one request: its chain, and a clone of its grammar if it has one. Used by
    one thread at a time: the decode thread (`sample`), or for a constrained request a sampling
    worker (`sample_logits`), so that grammar work never holds up the other sequences."""

    def __init__(self, sampling: SamplingParams, n_vocab: int, scratch: CandidateScratch) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self._scratch = scratch
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(self._chain, sampler)  # noqa: E731
        if sampling.repeat_penalty != 1.0 or sampling.frequency_penalty or sampling.presence_penalty:
            add(llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty
            ))
        self._greedy = sampling.temperature == 0
        self._min_p = sampling.min_p
        if self._greedy:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            seed = sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        constraint = sampling.constraint
        self._grammar = llama_cpp.llama_sampler_clone(constraint.prototype) if isinstance(constraint, CompiledGrammar) else None
        self._single = llama_cpp.llama_token_data_array(
            data=(llama_cpp.llama_token_data * 1)(), size=1, selected=-1, sorted=False
        )
        self.full_applications = 0  # times the grammar was applied to the whole vocabulary
        self._own: _Candidates | None = None  # a candidate array of its own, for sample_logits

    def sample(self, ctx: Any, index: int) -> int:
        llama = self._llama
        token = llama.llama_sampler_sample(self._chain, ctx, index)
        if self._grammar is not None:
            if not self._allowed(token):
                token = self._resample(ctx, index)
            llama.llama_sampler_accept(self._grammar, token)
        return token

    @property
    def constrained(self) -> bool:
        return self._grammar is not None

    def sample_logits(self, logits: Any) -> int:
        """As `sample`, from a copy of the logits (a numpy array), off the decode thread."""
        llama = self._llama
        if self._own is None:
            self._own = _Candidates(len(logits), self._scratch.end_tokens)
        candidates = self._own
        candidates.fill(logits)
        llama.llama_sampler_apply(self._chain, ctypes.byref(candidates.array))
        token = int(candidates.array.data[candidates.array.selected].id)
        if not self._allowed(token):
            token = self._resample_from(candidates, logits)
        llama.llama_sampler_accept(self._chain, token)
        llama.llama_sampler_accept(self._grammar, token)
        return token

    def _allowed(self, token: int) -> bool:
        entry = self._single.data[0]
        entry.id, entry.logit, entry.p = token, 1.0, 0.0
        self._single.selected = -1
        self._llama.llama_sampler_apply(self._grammar, ctypes.byref(self._single))
        return not math.isinf(self._single.data[0].logit)

    def _resample(self, ctx: Any, index: int) -> int:
        return self._resample_from(self._scratch.get(), self._llama.llama_get_logits_ith(ctx, index))

    def _resample_from(self, candidates: _Candidates, logits: Any) -> int:
        """The token the grammar allows: from the candidates near the best where that gives the
        answer the whole vocabulary would (see `_window_decides`), else from the whole vocabulary."""
        llama = self._llama
        for spread in WINDOW_SPREADS:
            lowest = candidates.fill_near_best(logits, spread, WINDOW_CAP)
            llama.llama_sampler_apply(self._grammar, ctypes.byref(candidates.array))
            best = candidates.best_allowed()
            if best is not None and self._window_decides(best, lowest):
                break
        else:
            self.full_applications += 1
            candidates.fill(logits)
            llama.llama_sampler_apply(self._grammar, ctypes.byref(candidates.array))
        llama.llama_sampler_apply(self._chain, ctypes.byref(candidates.array))
        return int(candidates.array.data[candidates.array.selected].id)

    def _window_decides(self, best: float, lowest: float) -> bool:
        """Greedy takes the best allowed token, which is in the window when any allowed token is.
        Sampling with min_p keeps only tokens whose logit is within ln(min_p) of the best one (top_k
        and top_p keep no more): when the window reaches below that, every token that could be
        chosen is in it."""
        if self._greedy:
            return True
        return self._min_p > 0 and lowest < best + math.log(self._min_p)

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            _free(sampler)
        self._chain = self._grammar = None
        self._own = None


class _Candidates:
    """A llama_token_data_array over the whole vocabulary, filled from logits with numpy."""

    def __init__(self, n_vocab: int, end_tokens: tuple[int, ...]) -> None:
        import llama_cpp
        import numpy

        self._numpy = numpy
        self.n_vocab = n_vocab
        # End-of-generation tokens are always checked: a finished grammar allows only them, and
        # their logits are often far below the window.
        self._end_tokens = numpy.array(end_tokens, dtype=numpy.int64)
        self._data = (llama_cpp.llama_token_data * n_vocab)()
        self._view = numpy.ctypeslib.as_array(self._data).view(
            numpy.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        ).reshape(n_vocab)
        self._ids = numpy.arange(n_vocab, dtype=numpy.int32)
        self.array = llama_cpp.llama_token_data_array(data=self._data, size=n_vocab, selected=-1, sorted=False)

    def fill_near_best(self, logits: Any, spread: float, cap: int) -> float:
        """The tokens whose logit is within `spread` of the best (at most `cap` of them, the best
        ones) and the end tokens, best first; returns how low the window reaches."""
        numpy = self._numpy
        values = self._values(logits)
        reach = float(values.max()) - spread
        near = numpy.flatnonzero(values >= reach)
        if len(near) > cap:
            near = numpy.argpartition(values, -cap)[-cap:]
            reach = float(values[near].min())
        near = numpy.union1d(near, self._end_tokens)
        near = near[numpy.argsort(values[near])[::-1]]
        window = self._view[: len(near)]
        window["id"] = near
        window["logit"] = values[near]
        window["p"] = 0.0
        self.array.size, self.array.selected, self.array.sorted = len(near), -1, True
        return reach

    def best_allowed(self) -> float | None:
        """The highest logit the grammar left in the array (sorted best first), or None."""
        logits = self._view["logit"][: self.array.size]
        allowed = self._numpy.flatnonzero(numpy_isfinite(self._numpy, logits))
        return float(logits[allowed[0]]) if allowed.size else None

    def _values(self, logits: Any) -> Any:
        """The logits as a numpy array: a copy already, or a view of llama.cpp's buffer."""
        numpy = self._numpy
        return logits if isinstance(logits, numpy.ndarray) else numpy.ctypeslib.as_array(logits, shape=(self.n_vocab,))

    def fill(self, logits: Any) -> None:
        self._view["id"] = self._ids
        self._view["logit"] = self._values(logits)
        self._view["p"] = 0.0
        self.array.size, self.array.selected, self.array.sorted = self.n_vocab, -1, False


def numpy_isfinite(numpy: Any, values: Any) -> Any:
    return numpy.isfinite(values)


class CandidateScratch:
    """The whole-vocabulary candidate array of one engine, made on first need and reused: only
    that engine's decode thread samples."""

    def __init__(self, n_vocab: int, end_tokens: tuple[int, ...]) -> None:
        self._n_vocab = n_vocab
        self.end_tokens = end_tokens
        self._candidates: _Candidates | None = None

    def get(self) -> _Candidates:
        if self._candidates is None:
            self._candidates = _Candidates(self._n_vocab, self.end_tokens)
        return self._candidates
