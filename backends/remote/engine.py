"""The remote engine (engine kind `openai`): a model another server runs, driven as a raw engine.

This server keeps doing everything above the engine (chat templates, tool parsing, stop strings,
constraints, every protocol), so a remote model behaves exactly as a local one. The upstream
tokenizes (its `/tokenize`), and generates from token ids through its `/v1/completions` with
its structured-output fields; a server that takes only text (llama-cpp-python's) gets the
rendered prompt text, which is what those ids came from.

`tokenize` is synchronous in the engine contract and the core calls it in a worker thread: it
blocks that thread for one round trip, running the request on the event loop's HTTP client (one
connection pool for everything; never call it on the event loop itself)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from backends.base import (
    ConstraintError,
    ConstraintSpec,
    Delta,
    EngineCapabilities,
    EngineConfig,
    EngineError,
    EngineInfo,
    EngineRefusedError,
    EngineUnavailableError,
    GenerationRequest,
)
from backends.remote.chat import chat_body, estimate_tokens
from backends.remote.config import DEFAULT_STARTUP_TIMEOUT, UpstreamConfig, UpstreamConfigError, upstream_configs
from backends.remote.flavours import FLAVOURS, Flavour, RemoteConstraint
from backends.remote.launch import launch_command
from backends.remote.managed import ManagedServer
from backends.remote.pool import UpstreamPool
from backends.remote.tokenizer import LocalTokenizer
from backends.remote.upstream import Timeouts, Upstream

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Turn ends of the chat formats we render; vLLM is told to stop on those its vocabulary has.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|endoftext|>")


class RemoteEngine:
    name = "openai"

    def __init__(self, config: EngineConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport  # tests pass an in-process transport
        options = config.options
        try:
            self._configs = upstream_configs(options)
        except UpstreamConfigError as error:
            raise EngineError(str(error)) from None
        self._timeouts = Timeouts(connect=float(options.get("connect_timeout") or 5.0), read=float(options.get("timeout") or 120.0))  # type: ignore[arg-type]
        self._interval = float(options.get("health_interval") or 5.0)  # type: ignore[arg-type]
        self._startup_timeout = float(options.get("startup_timeout") or DEFAULT_STARTUP_TIMEOUT)  # type: ignore[arg-type]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._pool: UpstreamPool | None = None
        self._info: EngineInfo | None = None
        self._stop_ids: list[int] = []
        self._tokenizer: LocalTokenizer | None = None
        self._messages = False  # the upstreams take the conversation (flavour chat)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(transport=self._transport, limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
        upstreams = [Upstream(config, self._client, self._timeouts) for config in self._configs]
        self._pool = UpstreamPool(upstreams, self._config.model, self._interval)
        try:
            await self._start_managed(upstreams)
            await self._pool.check_all()
            deadline = time.monotonic() + self._startup_timeout
            while self._pool.facts() is None and self._pool.starting() and time.monotonic() < deadline:
                await asyncio.sleep(min(self._interval, 1.0))  # an upstream that is loading its model: wait for it
                await self._pool.check_all()
            facts = self._pool.facts()
            if facts is None:
                raise self._pool.unavailable()
            self._messages = self._passes_conversation()
            self._info = self._make_info(facts)
            self._stop_ids = await self._end_of_turn_ids()
            tokenizer_file = self._config.options.get("tokenizer")
            if tokenizer_file and not self._messages:
                self._tokenizer = await self._local_tokenizer(str(tokenizer_file))
        except BaseException:
            await self.close()
            raise
        self._pool.start_health_checks()
        up = [upstream.name for upstream in upstreams if upstream.healthy]
        logger.info(
            "remote model %s: %d of %d upstreams up (%s), context %d",
            self._info.model_id, len(up), len(upstreams), ", ".join(up), self._info.context_length,
        )

    async def _start_managed(self, upstreams: list[Upstream]) -> None:
        managed = [upstream for upstream in upstreams if upstream.config.launch is not None]
        for upstream in managed:
            upstream.managed = self._managed_server(upstream)
        results = await asyncio.gather(*(upstream.managed.start() for upstream in managed), return_exceptions=True)
        for upstream, result in zip(managed, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                logger.error("%s", result)
                upstream.mark_down(str(result))

    def _managed_server(self, upstream: Upstream) -> ManagedServer:
        config = upstream.config
        spec = config.launch
        assert spec is not None
        parts = urlsplit(config.base_url)
        if parts.port is None:
            raise EngineError(f"a managed upstream's base_url needs a port: {config.base_url}")
        launch = launch_command(
            spec, spec.model or self._config.model, self._config.context_size, parts.hostname or "127.0.0.1", parts.port, config.api_key()
        )
        if upstream.flavour is None:
            upstream.flavour = FLAVOURS[launch.flavour]
        health = f"{config.root}{upstream.flavour.health_path}"
        return ManagedServer(
            upstream.name, launch, health, spec.startup_timeout or self._startup_timeout,
            on_down=upstream.mark_down,
            on_up=lambda: self._pool.check(upstream) if self._pool is not None else None,
        )

    def _passes_conversation(self) -> bool:
        """Whether the upstreams take the conversation (flavour chat) rather than a prompt."""
        passed_on = {upstream.flavour.messages for upstream in self._started().upstreams if upstream.flavour is not None}
        if len(passed_on) > 1:
            raise EngineError("a model's upstreams are either all chat-only (flavour chat) or none: one prompt cannot go both ways")
        return passed_on == {True}

    def _make_info(self, facts: Any) -> EngineInfo:
        flavours = [upstream.flavour for upstream in self._started().upstreams if upstream.flavour is not None]
        # Special-token text in messages is tokenized as text only where every upstream can.
        guarded = bool(flavours) and all(flavour.splits_special for flavour in flavours)
        return EngineInfo(
            model_id=self._config.model or facts.model_id,
            context_length=int(facts.context_length or self._config.context_size),
            architecture=facts.architecture,
            capabilities=EngineCapabilities(
                grammar=True, embeddings=facts.embeddings, batching=True, routing=True, messages=self._messages
            ),
            chat_template=facts.chat_template,
            bos_token=facts.bos_token,
            eos_token=facts.eos_token,
            special_tokens=facts.special_tokens if guarded else frozenset(),
            vocab_size=facts.vocab_size,
        )

    async def _local_tokenizer(self, path: str) -> LocalTokenizer:
        """The vocabulary of `path`, checked against an upstream's: a file that tokenizes otherwise is refused."""
        tokenizer = await asyncio.to_thread(LocalTokenizer, path)
        probe = "Hello, wörld! <start_of_turn>user\n42 ünïcode 🙂"
        remote = await self._pool.on_any(lambda upstream: upstream.tokenize(probe, special=True, add_bos=True))  # type: ignore[union-attr]
        if tokenizer.tokenize(probe) != remote:
            tokenizer.close()
            raise EngineError(f"options.tokenizer: {path} does not tokenize as the upstream does; give the GGUF file the upstream runs")
        logger.info("remote model %s: prompts are tokenized here with the vocabulary of %s", self._config.model, path)
        return tokenizer

    async def _end_of_turn_ids(self) -> list[int]:
        """The single-token turn ends of the upstream's vocabulary (for vLLM's stop_token_ids)."""
        if not any(upstream.flavour and upstream.flavour.stop_token_ids for upstream in self._pool.upstreams):  # type: ignore[union-attr]
            return []
        ids: set[int] = set()
        for text in END_OF_TURN_TOKENS:
            tokens = await self._pool.on_any(lambda upstream, text=text: upstream.tokenize(text, special=True, add_bos=False))  # type: ignore[union-attr]
            if len(tokens) == 1:
                ids.add(tokens[0])
        return sorted(ids)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
            await asyncio.gather(*(upstream.managed.stop() for upstream in pool.upstreams if upstream.managed is not None), return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        tokenizer, self._tokenizer = self._tokenizer, None
        if tokenizer is not None:
            tokenizer.close()

    # ---- contract ------------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError("the engine is not started")
        return self._info

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        if self._tokenizer is not None:
            return self._tokenizer.tokenize(text, special=special, add_bos=add_bos)
        if self._messages:
            return estimate_tokens(text)  # a chat-only upstream tokenizes nothing for others
        pool = self._started()
        return self._blocking(
            pool.on_any(
                lambda upstream: upstream.tokenize(text, special=special, add_bos=add_bos),
                prefer=None if special else lambda upstream: bool(upstream.flavour and upstream.flavour.splits_special),
            )
        )

    def detokenize(self, token_ids: list[int]) -> str:
        if self._tokenizer is not None:
            return self._tokenizer.detokenize(token_ids)
        if self._messages:
            raise EngineRefusedError("this model's upstream takes chat only: send text, not token ids")
        return self._blocking(self._started().on_any(lambda upstream: upstream.detokenize(token_ids)))

    def compile_constraint(self, spec: ConstraintSpec) -> RemoteConstraint:
        """The spec as it is (the upstream checks it; a refusal is a 400); plus GBNF where an
        upstream takes only that."""
        if self._messages:
            if spec.kind == "grammar":
                raise ConstraintError("a chat-only upstream takes no GBNF grammar; send a JSON schema")
            return RemoteConstraint(spec)
        if not any(upstream.flavour and upstream.flavour.takes_gbnf_only for upstream in self._started().upstreams):
            return RemoteConstraint(spec)
        if spec.kind == "grammar":
            return RemoteConstraint(spec, spec.grammar)
        import json

        from llama_cpp.llama_grammar import json_schema_to_gbnf  # pure Python; llama-cpp-python is a base requirement

        try:
            return RemoteConstraint(spec, json_schema_to_gbnf(json.dumps(spec.schema)))
        except RecursionError:
            raise ConstraintError("the schema nests too deeply to turn into a grammar") from None
        except Exception as error:  # the converter raises AssertionError, ValueError, KeyError ...
            raise ConstraintError(f"it cannot be turned into a grammar for llama.cpp: {error}") from None

    def health(self) -> str | None:
        return None  # a down upstream fails requests (or sends them to the fallback), not the server

    async def embed(self, texts: list[str]) -> list[list[float]]:
        model = self.info().model_id
        return await self._started().on_any(lambda upstream: upstream.embed(model, texts))

    def stats(self) -> dict[str, object]:
        upstreams = self._pool.upstreams if self._pool is not None else []
        return {
            "busy_slots": sum(upstream.in_flight for upstream in upstreams),  # requests running upstream
            "queue_length": 0,
            "upstreams": [upstream.status() for upstream in upstreams],
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """On the conversation's upstream, else the least busy; an upstream that fails before the
        first token is taken out and the next one tried. A failure after it ends the stream."""
        pool = self._started()
        order = pool.candidates(request.affinity)
        if not order:
            raise pool.unavailable()
        failures: list[Exception] = []
        for upstream in order:
            upstream.in_flight += 1
            upstream.requests += 1
            stream: AsyncIterator[Delta] | None = None
            started = False
            try:
                try:
                    if self._messages:
                        stream = upstream.chat(chat_body(request, self._config.model or self.info().model_id))
                    else:
                        stream = upstream.complete(await self._body(upstream, request))
                    first = await anext(stream)  # type: ignore[call-overload]
                except EngineRefusedError:
                    raise
                except EngineUnavailableError as error:
                    pool.failed(upstream, error)
                    failures.append(error)
                    continue
                started = True
                pool.stick(request.affinity, upstream)
                yield first
                async for delta in stream:
                    yield delta
                return
            except EngineError as error:
                if started:
                    pool.failed(upstream, error)
                    raise EngineError(f"the answer was cut: {error}") from error
                raise
            finally:
                upstream.in_flight -= 1
                if stream is not None:
                    await stream.aclose()  # type: ignore[attr-defined]
        raise pool.unavailable(failures)

    async def _body(self, upstream: Upstream, request: GenerationRequest) -> dict[str, Any]:
        flavour: Flavour = upstream.flavour  # type: ignore[assignment]
        if flavour.token_prompts:
            prompt: object = request.prompt_token_ids
        elif request.prompt_text is not None:
            prompt = request.prompt_text
        else:  # a client sent token ids; this upstream takes text
            prompt = await upstream.detokenize(request.prompt_token_ids)
        constraint = request.sampling.constraint
        body: dict[str, Any] = {
            "model": self._config.model or self.info().model_id,
            "prompt": prompt,
            "stream": True,
            **flavour.sampling(request.sampling),
            **(flavour.constraint(constraint) if isinstance(constraint, RemoteConstraint) else {}),
            **flavour.extra(request),
        }
        if flavour.stream_options:
            body["stream_options"] = flavour.stream_options
        if flavour.stop_token_ids and self._stop_ids:
            body["stop_token_ids"] = self._stop_ids
        return body

    # ---- helpers -------------------------------------------------------------------------------

    def _started(self) -> UpstreamPool:
        if self._pool is None:
            raise EngineError("the engine is not started")
        return self._pool

    def _blocking(self, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` on the engine's event loop from a worker thread, and wait for it."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            call.close()
            raise EngineError("the remote engine tokenizes off the event loop only (the core calls it in a worker thread)")
        return asyncio.run_coroutine_threadsafe(call, loop).result()


__all__ = ["RemoteConstraint", "RemoteEngine", "UpstreamConfig"]
