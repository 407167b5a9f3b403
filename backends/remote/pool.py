"""Several upstreams behind one model: which one takes a request (a conversation stays on the
one that holds its prompt cache while it is healthy; otherwise the least busy), background
health checks that take a failing upstream out and bring it back once it answers, and the
calls that may go to any upstream (tokenize, embeddings) tried on each in turn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from backends.base import EngineRefusedError, EngineTimeoutError, EngineUnavailableError
from backends.remote.flavours import ModelFacts
from backends.remote.upstream import Upstream, UpstreamBusyError

logger = logging.getLogger(__name__)

T = TypeVar("T")
STICKY_CONVERSATIONS = 4096  # conversations remembered (least recently used forgotten first)


class UpstreamPool:
    def __init__(self, upstreams: list[Upstream], model: str, health_interval: float) -> None:
        self.upstreams = upstreams
        self._model = model
        self._interval = health_interval
        self._sticky: OrderedDict[str, Upstream] = OrderedDict()
        self._facts: dict[str, ModelFacts] = {}
        self._task: asyncio.Task | None = None

    # ---- choosing ------------------------------------------------------------------------------

    def candidates(self, affinity: str | None = None) -> list[Upstream]:
        """The healthy upstreams in the order to try them: the conversation's own first, then the
        least busy (fewest requests in flight, then the quickest to answer)."""
        healthy = sorted(
            (upstream for upstream in self.upstreams if upstream.healthy),
            key=lambda upstream: (upstream.in_flight, upstream.ttft_seconds or 0.0),
        )
        own = self._sticky.get(affinity) if affinity else None
        if own is not None and own in healthy:
            healthy.remove(own)
            healthy.insert(0, own)
        return healthy

    def stick(self, affinity: str | None, upstream: Upstream) -> None:
        if not affinity:
            return
        self._sticky[affinity] = upstream
        self._sticky.move_to_end(affinity)
        while len(self._sticky) > STICKY_CONVERSATIONS:
            self._sticky.popitem(last=False)

    def unavailable(self, failures: list[Exception] | None = None) -> EngineUnavailableError:
        """The error when no upstream can take a request: every upstream and why."""
        if failures:
            reasons = "; ".join(str(failure) for failure in failures)
            if all(isinstance(failure, EngineTimeoutError) for failure in failures):
                return EngineTimeoutError(reasons)
            return EngineUnavailableError(f"no upstream could take the request: {reasons}")
        reasons = "; ".join(upstream.reason or f"upstream {upstream.name} is down" for upstream in self.upstreams)
        return EngineUnavailableError(f"no upstream is up: {reasons}")

    def failed(self, upstream: Upstream, error: Exception) -> None:
        """A request failed on `upstream`: count it, and take the upstream out unless it was
        only busy (it answers again on its own) or the request was at fault."""
        upstream.record_failure(str(error))
        if isinstance(error, EngineUnavailableError) and not isinstance(error, UpstreamBusyError):
            upstream.mark_down(str(error))

    async def on_any(self, call: Callable[[Upstream], Awaitable[T]], prefer: Callable[[Upstream], bool] | None = None) -> T:
        """`call` on the first healthy upstream that answers (those `prefer` likes first)."""
        order = self.candidates()
        if prefer is not None:
            order.sort(key=lambda upstream: not prefer(upstream))
        failures: list[Exception] = []
        for upstream in order:
            try:
                return await call(upstream)
            except EngineRefusedError:
                raise
            except EngineUnavailableError as error:
                self.failed(upstream, error)
                failures.append(error)
        raise self.unavailable(failures)

    # ---- health --------------------------------------------------------------------------------

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(upstream) for upstream in self.upstreams))

    async def check(self, upstream: Upstream) -> None:
        """Health and, the first time it answers, what it says about its model."""
        reason = await upstream.check()
        if reason is None and upstream.name not in self._facts:
            try:
                self._facts[upstream.name] = await upstream.facts(self._model)
            except (EngineUnavailableError, EngineRefusedError) as error:
                reason = str(error)
        if reason is None:
            upstream.mark_up()
        else:
            upstream.mark_down(reason)

    def starting(self) -> bool:
        """Whether an upstream answers but is still loading its model."""
        return any(upstream.starting for upstream in self.upstreams)

    def facts(self) -> ModelFacts | None:
        """What the first upstream in the configured order that answered says about the model."""
        return next((self._facts[upstream.name] for upstream in self.upstreams if upstream.name in self._facts), None)

    def start_health_checks(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._health_loop(), name="upstream-health")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_all()
            except Exception:  # a health check must never end the loop
                logger.exception("upstream health check failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
