"""One upstream server: its HTTP calls, what failed and how it is doing (health, in-flight
requests, latency, errors), and a streamed completion turned into engine deltas. Failures are
classified once here: the request's fault (EngineRefusedError, never retried), the server's
(EngineUnavailableError, tried elsewhere) or too slow (EngineTimeoutError)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from backends.base import Delta, EngineError, EngineRefusedError, EngineTimeoutError, EngineUnavailableError
from backends.remote.chat import ChatChunks
from backends.remote.config import UpstreamConfig
from backends.remote.flavours import FLAVOURS, Flavour, ModelFacts, detect_flavour

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
LATENCY_WEIGHT = 0.2  # of the newest request in the moving average of time to first token


class UpstreamBusyError(EngineUnavailableError):
    """The upstream is busy (429): try another, but it stays in (it answers again on its own)."""


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float  # to the first token and between tokens
    health: float = 5.0

    def request(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)

    def probe(self) -> httpx.Timeout:
        return httpx.Timeout(self.health, connect=min(self.connect, self.health))


class Upstream:
    def __init__(self, config: UpstreamConfig, client: httpx.AsyncClient, timeouts: Timeouts) -> None:
        self.config = config
        self.name = config.name
        self._client = client
        self._timeouts = timeouts
        self.flavour: Flavour | None = FLAVOURS.get(config.flavour)
        self.healthy = False
        self.starting = False  # it answers, but is still loading its model (503)
        self.reason: str | None = "not checked yet"  # why it is down
        self.down_since: float | None = None
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.ttft_seconds: float | None = None  # moving average
        self.last_error: str | None = None
        self.bos_prefix: list[int] = []  # what its tokenizer adds for BOS (flavours that always add it)
        self.managed: Any = None  # a ManagedServer when this server starts it

    # ---- state -------------------------------------------------------------------------------

    def mark_up(self) -> None:
        if self.down_since is not None:
            logger.warning("upstream %s is back after %.0f s down (%s)", self.name, time.time() - self.down_since, self.reason)
        elif not self.healthy:
            logger.info("upstream %s is up", self.name)
        self.healthy, self.reason, self.down_since = True, None, None

    def mark_down(self, reason: str) -> None:
        if self.down_since is None:
            logger.warning("upstream %s is down: %s", self.name, reason)
            self.down_since = time.time()
        self.healthy, self.reason = False, reason

    def record_failure(self, error: str) -> None:
        self.failures += 1
        self.last_error = error

    def record_first_token(self, seconds: float) -> None:
        previous = self.ttft_seconds
        self.ttft_seconds = seconds if previous is None else previous + LATENCY_WEIGHT * (seconds - previous)

    def status(self) -> JSON:
        return {
            "name": self.name,
            "base_url": self.config.base_url,
            "flavour": self.flavour.name if self.flavour else self.config.flavour,
            "healthy": self.healthy,
            "reason": self.reason,
            "down_since": self.down_since,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_error,
            "ttft_seconds": round(self.ttft_seconds, 4) if self.ttft_seconds is not None else None,
            "managed": self.managed.status() if self.managed is not None else None,
        }

    # ---- HTTP --------------------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        key = self.config.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def get_json(self, path: str) -> JSON | None:
        return await self._call("GET", path, None, self._timeouts.probe())

    async def post_json(self, path: str, body: JSON) -> JSON | None:
        return await self._call("POST", path, body, self._timeouts.request())

    async def _call(self, method: str, path: str, body: JSON | None, timeout: httpx.Timeout) -> JSON | None:
        url = f"{self.config.root}{path}"
        try:
            response = await self._client.request(method, url, json=body, headers=self.headers, timeout=timeout)
        except httpx.HTTPError as error:
            raise self.transport_error(error, waited=timeout.read) from error
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            self.starting = response.status_code == 503
            raise self.status_error(response.status_code, response.content)
        try:
            return response.json()
        except ValueError:
            raise EngineUnavailableError(f"upstream {self.name} answered {path} with something that is not JSON") from None

    async def check(self) -> str | None:
        """None when the server answers its health route with 200; else why not. The first time
        (flavour auto), what kind of server it is."""
        self.starting = False
        try:
            flavour = await self._detected()
        except EngineUnavailableError as error:
            return str(error)
        try:
            response = await self._client.get(f"{self.config.root}{flavour.health_path}", headers=self.headers, timeout=self._timeouts.probe())
        except httpx.HTTPError as error:
            return str(self.transport_error(error, waited=self._timeouts.health))
        if response.status_code == 200:
            return None
        self.starting = response.status_code == 503
        return f"upstream {self.name}: {flavour.health_path} answered {response.status_code}" + (" (still starting)" if self.starting else "")

    async def _detected(self) -> Flavour:
        if self.flavour is None:
            try:
                self.flavour = await detect_flavour(self)
            except EngineUnavailableError:
                raise
            except EngineError as error:
                raise EngineUnavailableError(f"upstream {self.name}: {error}") from None
            logger.info("upstream %s is %s", self.name, self.flavour.label)
        return self.flavour

    async def facts(self, model: str) -> ModelFacts:
        """What it says about its model."""
        flavour = await self._detected()
        try:
            facts = await flavour.facts(self, model)
        except (EngineUnavailableError, EngineRefusedError):
            raise
        except EngineError as error:
            raise EngineUnavailableError(f"upstream {self.name}: {error}") from None
        if flavour.always_adds_bos:
            self.bos_prefix = list((await self.post_json(flavour.tokenize_path, flavour.tokenize_body("", True, True)) or {}).get("tokens", []))
        return facts

    async def tokenize(self, text: str, *, special: bool, add_bos: bool) -> list[int]:
        flavour = self._flavour()
        answer = await self.post_json(flavour.tokenize_path, flavour.tokenize_body(text, add_bos, special))
        if answer is None or not isinstance(answer.get("tokens"), list):
            raise EngineUnavailableError(f"upstream {self.name} has no {flavour.tokenize_path}")
        ids = list(answer["tokens"])
        if flavour.always_adds_bos and not add_bos and self.bos_prefix and ids[: len(self.bos_prefix)] == self.bos_prefix:
            ids = ids[len(self.bos_prefix) :]
        return ids

    async def detokenize(self, ids: list[int]) -> str:
        flavour = self._flavour()
        answer = await self.post_json(flavour.detokenize_path, flavour.detokenize_body(ids))
        if answer is None:
            raise EngineUnavailableError(f"upstream {self.name} has no {flavour.detokenize_path}")
        return str(answer.get(flavour.detokenized_key, ""))

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        answer = await self.post_json("/v1/embeddings", {"model": model, "input": texts})
        if answer is None:
            raise EngineRefusedError(f"upstream {self.name} makes no embeddings (no /v1/embeddings)")
        rows = sorted(answer.get("data", []), key=lambda row: row.get("index", 0))
        return [list(row["embedding"]) for row in rows]

    def _flavour(self) -> Flavour:
        if self.flavour is None:
            raise EngineUnavailableError(f"upstream {self.name} has not been reached yet")
        return self.flavour

    # ---- streamed answers ----------------------------------------------------------------------

    def complete(self, body: JSON) -> AsyncIterator[Delta]:
        """POST /v1/completions (a prompt or its token ids), streamed."""
        return self.stream("/completions", body, CompletionChunks())

    def chat(self, body: JSON) -> AsyncIterator[Delta]:
        """POST /v1/chat/completions (a chat-only upstream), streamed."""
        return self.stream("/chat/completions", body, ChatChunks())

    async def stream(self, path: str, body: JSON, chunks: Chunks) -> AsyncIterator[Delta]:
        """Deltas as the answer arrives. Whatever fails before the first delta raises a classified
        error; after it, an EngineError naming the cut. The finishing delta waits for the usage
        that follows it."""
        url = f"{self.config.base_url}{path}"
        started = time.perf_counter()
        try:
            async with self._client.stream("POST", url, json=body, headers=self.headers, timeout=self._timeouts.request()) as response:
                if response.status_code >= 400:
                    raise self.status_error(response.status_code, await response.aread())
                timed = False
                async for event in _sse_events(response):
                    if "error" in event:
                        raise EngineUnavailableError(f"upstream {self.name} reported an error: {_message(event)}")
                    deltas = chunks.feed(event)
                    if not timed and chunks.started:
                        self.record_first_token(time.perf_counter() - started)
                        timed = True
                    for delta in deltas:
                        yield delta
                last = chunks.last()
                if last is None:
                    raise EngineUnavailableError(f"upstream {self.name} ended the stream without a finish reason")
                yield last
        except httpx.HTTPError as error:
            raise self.transport_error(error, chunks.produced) from error

    # ---- errors --------------------------------------------------------------------------------

    def transport_error(self, error: httpx.HTTPError, produced: int = 0, waited: float | None = None) -> EngineError:
        """`waited`: the read timeout of the call (default: the model's timeout option)."""
        after = f" after {produced} tokens" if produced else ""
        if isinstance(error, httpx.TimeoutException):
            if isinstance(error, httpx.ConnectTimeout):
                return EngineTimeoutError(f"upstream {self.name} did not accept a connection within {self._timeouts.connect:g} s")
            seconds = self._timeouts.read if waited is None else waited
            option = " (the model's timeout option)" if seconds == self._timeouts.read else ""
            return EngineTimeoutError(f"upstream {self.name} sent nothing for {seconds:g} s{after}{option}")
        if isinstance(error, httpx.ConnectError):
            return EngineUnavailableError(f"upstream {self.name} cannot be reached: {_reason(error)}")
        return EngineUnavailableError(f"upstream {self.name} broke off the connection{after}: {_reason(error)}")

    def status_error(self, status: int, content: bytes) -> EngineError:
        message = _message_of(content)
        if status in (401, 403):
            where = f"the variable {self.config.api_key_env}" if self.config.api_key_env else "no key (options.api_key_env is unset)"
            return EngineUnavailableError(f"upstream {self.name} refused the key ({status}: {message}); this server sends {where}")
        if status == 429:
            return UpstreamBusyError(f"upstream {self.name} is busy (429): {message}")
        if status >= 500:
            return EngineUnavailableError(f"upstream {self.name} answered {status}: {message}")
        return EngineRefusedError(f"the upstream refused the request: {message}", 400)


async def _sse_events(response: httpx.Response) -> AsyncIterator[JSON]:
    done = False
    async for line in response.aiter_lines():
        # After [DONE], read on to the end of the body: a response read whole returns its
        # connection to the pool for the next request (one left unread is closed).
        if done or not line.startswith("data:"):
            continue  # blank separators, `event:` lines, comments
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


class Chunks(Protocol):
    """Reads one kind of streamed answer: deltas per event, and the finishing one at the end."""

    produced: int

    @property
    def started(self) -> bool: ...

    def feed(self, event: JSON) -> list[Delta]: ...

    def last(self) -> Delta | None: ...


class CompletionChunks:
    """Streamed `text_completion` chunks: text as it comes; the finish with the usage after it."""

    def __init__(self) -> None:
        self.produced = 0
        self._finish: Delta | None = None
        self._usage: JSON | None = None

    @property
    def started(self) -> bool:
        return self.produced > 0 or self._finish is not None

    def feed(self, event: JSON) -> list[Delta]:
        usage = event.get("usage") or None
        if usage is not None:
            self._usage = usage
        deltas: list[Delta] = []
        for choice in event.get("choices") or []:
            text = choice.get("text") or ""
            # The server's running count where it sends one (vLLM's continuous usage), else one per chunk.
            counted = usage.get("completion_tokens") if usage else None
            self.produced = counted if isinstance(counted, int) else self.produced + (1 if text else 0)
            reason = choice.get("finish_reason")
            if reason is not None:
                self._finish = Delta(text, self.produced, "length" if reason == "length" else "stop")
            elif text:
                deltas.append(Delta(text, self.produced))
        return deltas

    def last(self) -> Delta | None:
        finish, usage = self._finish, self._usage
        if finish is None or usage is None:
            return finish
        details = usage.get("prompt_tokens_details") or {}
        return Delta(
            finish.text,
            int(usage.get("completion_tokens") or finish.completion_tokens),
            finish.finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )


def _message(event: JSON) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _message_of(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")[:300] or "no message"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:300]


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:200]
