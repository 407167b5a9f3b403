"""llama.cpp engine: continuous batching over llama-cpp-python's low-level API.

One context holds `parallel` sequences in a unified KV cache. One decode loop, on its own
thread, admits waiting requests into free slots, prefills prompts in chunks interleaved with
the decode steps of running sequences, samples each sequence with its own sampler chain, and
frees a slot the moment its sequence finishes or is cancelled. Prompt prefixes stay cached per
slot (backends.prompt_cache) and are copied between slots instead of recomputed."""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from backends import llama_cpp_model
from backends.base import (
    ConstraintSpec,
    Delta,
    EngineConfig,
    EngineError,
    EngineInfo,
    EngineOverloadedError,
    GenerationRequest,
)
from backends.llama_cpp_embedder import LlamaCppEmbedder
from backends.llama_cpp_job import Job
from backends.llama_cpp_kv import KvSlots
from backends.llama_cpp_model import BATCH_TOKENS, LoadedModel
from backends.llama_cpp_prefix_store import PrefixStore, model_key
from backends.llama_cpp_sampling import CandidateScratch, CompiledGrammar, GrammarCompiler, RequestSampler
from backends.llama_cpp_stash import PrefixStash
from backends.prompt_cache import PromptCache

logger = logging.getLogger(__name__)

_FINISHED = object()


class LlamaCppEngine:
    name = "llama_cpp"

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._parallel = max(1, config.parallel)
        self._max_queue = int(config.options.get("max_queue", 16))  # type: ignore[call-overload]
        self._info: EngineInfo | None = None
        self._loaded: LoadedModel | None = None
        self._embedder: LlamaCppEmbedder | None = None
        self._grammars: GrammarCompiler | None = None
        self._scratch: CandidateScratch | None = None
        self._cache = PromptCache(self._parallel)
        self._kv: KvSlots | None = None
        self._sampling_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._stash = PrefixStash(int(config.options.get("prompt_cache_ram_mb", 0) or 0) * 2**20)  # type: ignore[call-overload]
        self._hits: dict[str, int] = {}  # cached prompt tokens reused, by where they came from
        self.preemptions = 0
        self._waiting: list[Job] = []  # sorted by rank
        self._running: list[Job] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._failure: str | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        path = Path(self._config.model)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist; set JARVIS_MODEL_NAME to a GGUF file")
        await asyncio.to_thread(self._load, path)
        self._embedder = LlamaCppEmbedder(str(path), self._config.context_size, self._config.n_threads, self._config.n_gpu_layers)
        self._sampling_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="llama-grammar")
        self._thread = threading.Thread(target=self._loop, name="llama-decode", daemon=True)
        self._thread.start()

    def _load(self, path: Path) -> None:
        loaded = self._loaded = llama_cpp_model.load(path, self._config, self._parallel)
        loaded.warm_up()
        self._kv = KvSlots(loaded.context.ctx, loaded.context.memory, self._cache, self._prefix_store(path), self._config.context_size)
        self._kv.restore_from_disk()
        self._grammars = GrammarCompiler(loaded.vocab)
        self._scratch = CandidateScratch(loaded.n_vocab, loaded.end_tokens())
        self._info = loaded.info(path, self._config.context_size)

    def _prefix_store(self, path: Path) -> PrefixStore | None:
        megabytes = int(self._config.options.get("prompt_cache_disk_mb", 0) or 0)  # type: ignore[call-overload]
        if megabytes <= 0:
            return None
        folder = Path(self._config.cache_dir) / "prompt-cache" / model_key(str(path), llama_cpp_model.cache_settings(self._config))
        return PrefixStore(folder, megabytes * 2**20)

    async def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for job in [*self._running, *self._waiting]:
            job.send(EngineError("the engine was shut down"))
            self._finish(job, None)  # frees its sampler, once a worker sampling with it is done
        self._running.clear()
        self._waiting.clear()
        if self._sampling_pool is not None:
            self._sampling_pool.shutdown(wait=True)
            self._sampling_pool = None
        if self._kv is not None and self._failure is None:
            try:
                await asyncio.to_thread(self._kv.save_to_disk)
            except Exception:  # a cache that cannot be written must not stop the unload
                logger.exception("prompt cache: saving failed")
        if self._embedder is not None:
            self._embedder.close()
        if self._grammars is not None:
            self._grammars.close()
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None

    # ---- contract --------------------------------------------------------------------------

    def _started(self) -> LoadedModel:
        if self._loaded is None:
            raise EngineError("the engine is not started")
        return self._loaded

    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError("the engine is not started")
        return self._info

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        loaded = self._started()
        if not text:
            return [loaded.model.token_bos()] if add_bos and loaded.add_bos else []
        return loaded.model.tokenize(text.encode("utf-8"), add_bos=add_bos and loaded.add_bos, special=special)

    def detokenize(self, token_ids: list[int]) -> str:
        return self._started().model.detokenize(token_ids, special=False).decode("utf-8", "replace")

    def compile_constraint(self, spec: ConstraintSpec) -> CompiledGrammar:
        if self._grammars is None:
            raise EngineError("the engine is not started")
        return self._grammars.compile(spec)

    def health(self) -> str | None:
        return self._failure

    async def embed(self, texts: list[str]) -> list[list[float]]:
        assert self._embedder is not None
        return await self._embedder.embed(texts)

    def stats(self) -> dict[str, object]:
        kv = self._kv
        return {
            "busy_slots": self._cache.busy_count(),
            "queue_length": len(self._waiting),
            "parallel": self._parallel,
            "cached_tokens_by_source": dict(self._hits),
            "prefixes_restored": kv.restored if kv else 0,
            "restore_seconds": round(kv.restore_seconds, 3) if kv else 0.0,
            "preemptions": self.preemptions,
            "prefixes_in_memory": len(self._stash),
            "prefix_memory_bytes": self._stash.size_bytes,
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if self._thread is None:
            raise EngineError("the engine is not started")
        if self._failure is not None:
            raise EngineError(self._failure)
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._wake:
            # A cancelled running job still holds its slot until the decode thread's next step frees it.
            active = sum(not running.cancelled for running in self._running)
            if active + len(self._waiting) >= self._parallel + self._max_queue:
                # Newly queued requests go to free slots on the decode thread's next step: count
                # them as running, not waiting.
                queued = active + len(self._waiting) - self._parallel
                raise EngineOverloadedError(
                    f"{self._parallel} requests are running (JARVIS_PARALLEL={self._parallel}) and {queued} "
                    f"are waiting, the most the queue holds (JARVIS_MAX_QUEUE={self._max_queue}); retry shortly",
                    retry_after_seconds=1,
                )
            bisect.insort(self._waiting, job, key=lambda waiting: waiting.rank)
            self._wake.notify()
        try:
            while (item := await job.out.get()) is not _FINISHED:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            with self._wake:
                job.cancelled = True  # a no-op for a finished job; frees the slot of a running one
                if job in self._waiting:
                    self._waiting.remove(job)  # its place in the queue is free at once
                self._wake.notify()

    # ---- the decode loop (its own thread) ----------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._has_work():
                        self._wake.wait()
                    if self._stopping:
                        return
                    self._drop_cancelled()
                    self._admit()
                if self._running:
                    try:
                        self._step()
                    except Exception as error:  # keep serving: fail the running requests, not the engine
                        logger.exception("decode step failed")
                        for job in list(self._running):
                            job.send(EngineError(f"llama.cpp decode failed: {error}"))
                            self._finish(job, None)
        except BaseException as error:  # the loop itself broke: say so everywhere, never hang
            self._failure = f"the llama.cpp decode loop stopped: {type(error).__name__}: {error}"
            logger.critical("%s", self._failure, exc_info=True)
            with self._wake:
                for job in [*self._running, *self._waiting]:
                    job.send(EngineError(self._failure))
                self._running.clear()
                self._waiting.clear()

    def _has_work(self) -> bool:
        return bool(self._running) or any(not job.cancelled for job in self._waiting)

    def _drop_cancelled(self) -> None:
        self._waiting = [job for job in self._waiting if not job.cancelled]
        for job in [job for job in self._running if job.cancelled]:
            self._finish(job, None)

    def _admit(self) -> None:
        while self._waiting:
            if not self._cache.free_count() and not self._preempt_for(self._waiting[0]):
                return
            job = self._waiting.pop(0)
            try:
                self._start_job(job)
            except Exception as error:  # one request's set-up fails that request only
                logger.exception("request %s could not start", job.request.request_id)
                job.send(EngineError(f"the request could not start: {error}"))
                self._finish(job, None)

    def _preempt_for(self, waiting: Job) -> bool:
        """Every slot is busy: suspend the lowest-priority running request below `waiting`'s
        priority (the latest to arrive among equals). It waits with its KV state in memory and
        continues where it stopped."""
        candidates = [job for job in self._running if not job.cancelled and job.request.priority < waiting.request.priority]
        if not candidates:
            return False
        victim = max(candidates, key=lambda job: job.rank)
        assert victim.slot is not None and self._kv is not None
        victim.suspended = self._kv.suspend(victim.slot)
        victim.history = list(victim.slot.tokens)
        self._running.remove(victim)
        self._cache.release(victim.slot)
        victim.slot = None
        bisect.insort(self._waiting, victim, key=lambda job: job.rank)
        self.preemptions += 1
        logger.info(
            "request %s (priority %d) waits for %s (priority %d)",
            victim.request.request_id, victim.request.priority, waiting.request.request_id, waiting.request.priority,
        )
        return True

    def _start_job(self, job: Job) -> None:
        assert self._kv is not None and self._scratch is not None
        if job.suspended is not None:  # a preempted request continues where it stopped
            job.slot = self._cache.claim_free()
            assert job.slot is not None
            self._kv.resume(job.slot, job.suspended, job.history)
            job.suspended, job.history = None, []
            self._running.append(job)
            return
        prompt = job.request.prompt_token_ids
        placement = self._cache.place(prompt, job.request.cache_key)
        assert placement is not None
        job.slot = placement.slot
        if self._stash.worth_keeping(placement.dropped, placement.slot.tokens):  # keep the prefix this placement overwrites
            self._stash.add(placement.dropped, self._kv.suspend(placement.slot))  # type: ignore[arg-type]
        self._kv.apply(placement)
        keep, source = placement.keep, placement.cache_source
        kept = self._stash.best(prompt)
        if kept is not None and min(kept[1], len(prompt) - 1) >= keep + PromptCache.MIN_COPY_GAIN:
            keep, source = min(kept[1], len(prompt) - 1), "ram"
            self._kv.restore_prefix(placement.slot, kept[0].state, kept[0].tokens, keep)
        job.position, job.cached_tokens, job.cache_source = keep, keep, source
        if source:
            self._hits[source] = self._hits.get(source, 0) + keep
        job.pending = list(prompt[keep:])
        job.sampler = RequestSampler(job.request.sampling, self._started().n_vocab, self._scratch)
        self._running.append(job)

    def _step(self) -> None:
        """One llama_decode: a token for every generating sequence, prefill chunks in the rest.
        A constrained sequence whose token is still being sampled sits this step out."""
        self._take_sampled()
        batch = self._started().batch.batch
        batch.n_tokens = 0
        outputs: list[tuple[Job, int]] = []  # (job, batch index whose logits it samples)
        fed: list[tuple[Job, list[int]]] = []

        def add(job: Job, tokens: list[int], logits_last: bool) -> None:
            for offset, token in enumerate(tokens):
                index = batch.n_tokens
                batch.token[index] = token
                batch.pos[index] = job.position + offset
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = job.slot.seq_id  # type: ignore[union-attr]
                batch.logits[index] = logits_last and offset == len(tokens) - 1
                batch.n_tokens += 1
            if logits_last:
                outputs.append((job, batch.n_tokens - 1))
            fed.append((job, tokens))
            job.position += len(tokens)

        for job in self._running:
            if job.next_token is not None:
                add(job, [job.next_token], True)
                job.next_token = None
        for job in self._running:
            room = BATCH_TOKENS - batch.n_tokens
            if job.pending and room > 0:
                chunk, job.pending = job.pending[:room], job.pending[room:]
                add(job, chunk, not job.pending)
        if batch.n_tokens == 0:
            self._wait_for_sampling()
            return
        self._decode(batch, fed)
        for job, tokens in fed:
            job.slot.tokens.extend(tokens)  # type: ignore[union-attr]
        for job, index in outputs:
            assert job.sampler is not None
            if job.sampler.constrained:
                self._sample_elsewhere(job, index)
            else:
                self._take(job, job.sampler.sample(self._started().context.ctx, index))

    def _sample_elsewhere(self, job: Job, index: int) -> None:
        """Grammar work can take long: a constrained request's token is sampled by a worker from
        a copy of its logits, while the decode thread goes on with the other sequences."""
        import llama_cpp
        import numpy

        loaded = self._started()
        logits = numpy.array(numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(loaded.context.ctx, index), shape=(loaded.n_vocab,)))
        assert job.sampler is not None and self._sampling_pool is not None
        job.sampling = self._sampling_pool.submit(job.sampler.sample_logits, logits)

    def _take_sampled(self) -> None:
        for job in [job for job in self._running if job.sampling is not None and job.sampling.done()]:
            future, job.sampling = job.sampling, None
            error = future.exception()
            if error is not None:
                job.send(EngineError(f"sampling failed: {error}"))
                self._finish(job, None)
            else:
                self._take(job, future.result())

    def _wait_for_sampling(self) -> None:
        pending = [job.sampling for job in self._running if job.sampling is not None]
        if pending:
            concurrent.futures.wait(pending, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED)

    def _decode(self, batch: Any, fed: list[tuple[Job, list[int]]]) -> None:
        import llama_cpp

        assert self._kv is not None
        while (code := llama_cpp.llama_decode(self._started().context.ctx, batch)) == 1:
            self._kv.evict_one()  # the KV cache is full: drop the least recently used cached prefix
        if code != 0:
            raise EngineError(f"llama_decode returned {code}")

    def _take(self, job: Job, token: int) -> None:
        """The sampled token: the end, or the next piece of text and the token fed next step."""
        now = time.perf_counter()
        job.first_token_at = job.first_token_at or now
        prompt_tokens = len(job.request.prompt_token_ids)
        loaded = self._started()
        if loaded.is_end(token):
            self._emit_last(job, "stop")
            return
        job.generated += 1
        text = job.decoder.decode(loaded.piece(token))
        out_of_room = job.position + 1 >= self._config.context_size
        if job.generated >= job.request.sampling.max_tokens or out_of_room:
            self._emit_last(job, "length", text)
            return
        job.send(Delta(text, job.generated, None, prompt_tokens, job.cached_tokens, job.cache_source))
        job.next_token = token

    def _emit_last(self, job: Job, reason: str, text: str = "") -> None:
        text += job.decoder.decode(b"", final=True)
        job.send(Delta(text, job.generated, reason, len(job.request.prompt_token_ids), job.cached_tokens, job.cache_source))  # type: ignore[arg-type]
        self._finish(job, _FINISHED)

    def _finish(self, job: Job, final: object) -> None:
        if job in self._running:
            self._running.remove(job)
        if job.slot is not None:
            self._cache.release(job.slot)
            if job.request.warm:
                job.slot.source = "warm"
        if final is not None:
            job.send(final)
        if logger.isEnabledFor(logging.DEBUG) and job.first_token_at is not None:
            decode_seconds = max(time.perf_counter() - job.first_token_at, 1e-9)
            logger.debug(
                "%s: slot %s, %d prompt tokens (%d cached), ttft %.3f s, %d tokens at %.1f/s",
                job.request.request_id, job.slot.seq_id if job.slot else "-", len(job.request.prompt_token_ids),
                job.cached_tokens, job.first_token_at - job.submitted_at, job.generated, job.generated / decode_seconds,
            )
        if job.sampling is not None:  # a worker is sampling with it: let it finish first
            concurrent.futures.wait([job.sampling])
            job.sampling = None
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None
