"""An upstream server this one runs (`start:` in models.yaml): started when its model loads,
healthy once its health route answers, stopped when the model unloads (keep-alive, admin
unload, shutdown), restarted with a growing back-off when it dies, its output in this server's
log. A separate process is how a GPU's memory is truly given back on unload, and how an engine
crash stays out of this process.

The child is started from the event loop's thread (the main thread) so the kernel kills it if
this process dies (`server.process_tree.dies_with_this_process`), and it stays in this process
group, which the supervisor clears when the server ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import IO

import httpx

from backends.base import EngineUnavailableError
from backends.remote.launch import Launch, child_environment

logger = logging.getLogger("jarvis.upstream")

STOP_GRACE_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
STABLE_SECONDS = 60.0  # running this long resets the back-off
POLL_SECONDS = 0.2


class ManagedServer:
    def __init__(
        self,
        name: str,
        launch: Launch,
        health_url: str,
        startup_timeout: float,
        on_down: Callable[[str], None],
        on_up: Callable[[], Awaitable[None] | None],
    ) -> None:
        self.name = name
        self.launch = launch
        self._health_url = health_url
        self._startup_timeout = startup_timeout
        self._on_down = on_down
        self._on_up = on_up
        self._process: subprocess.Popen | None = None
        self._watcher: asyncio.Task | None = None
        self._stopping = False
        self.state = "stopped"  # stopped, starting, running, restarting, failed
        self.restarts = 0
        self.last_exit: str | None = None
        self.started_at: float | None = None
        self._backoff = BACKOFF_FIRST_SECONDS

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "command": " ".join(self.launch.command),
            "unmapped_options": self.launch.unmapped,
        }

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server and wait until it is healthy. Raises EngineUnavailableError when it
        exits or stays unhealthy past its startup timeout (it is then stopped)."""
        self._stopping = False
        if self.state == "running" and self.pid is not None:
            return
        self.state = "starting"
        try:
            await self._spawn_and_wait()
        except EngineUnavailableError:
            # Its model may still serve through other upstreams: keep trying this one, with back-off.
            self.state = "failed"
            await self._terminate()
            self._watch_in_background()
            raise
        except BaseException:
            self.state = "failed"
            await self._terminate()
            raise
        self.state = "running"
        self._watch_in_background()

    def _watch_in_background(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name=f"managed-upstream-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()
        self.state = "stopped"

    async def _spawn_and_wait(self) -> None:
        self._spawn()
        deadline = time.monotonic() + self._startup_timeout
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
            while True:
                process = self._process
                if process is None or process.poll() is not None:
                    code = process.returncode if process is not None else None
                    self.last_exit = f"exited with {code} while starting"
                    raise EngineUnavailableError(f"managed upstream {self.name} {self.last_exit}; its output is in the log above")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self._health_url)).status_code == 200:
                        self.started_at = time.monotonic()
                        logger.info("managed upstream %s is healthy (pid %d)", self.name, process.pid)
                        return
                if time.monotonic() > deadline:
                    raise EngineUnavailableError(
                        f"managed upstream {self.name} was not healthy within {self._startup_timeout:g} s "
                        "(start.startup_timeout); its output is in the log above"
                    )
                await asyncio.sleep(POLL_SECONDS)

    def _spawn(self) -> None:
        logger.info("starting managed upstream %s: %s", self.name, " ".join(self.launch.command))
        if self.launch.unmapped:
            logger.warning("managed upstream %s: options with no argument in its server, not passed: %s", self.name, ", ".join(self.launch.unmapped))
        self._process = subprocess.Popen(
            self.launch.command,
            env=child_environment(self.launch),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_dies_with_this_process(),
        )
        threading.Thread(target=_pump, args=(self._process.stdout, self.name), name=f"upstream-log-{self.name}", daemon=True).start()

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        logger.info("stopping managed upstream %s (pid %d)", self.name, process.pid)
        process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        if process.poll() is None:
            logger.warning("managed upstream %s did not stop within %.0f s: killing it", self.name, STOP_GRACE_SECONDS)
            process.kill()
            await asyncio.to_thread(process.wait)

    async def _watch(self) -> None:
        """Restart the server whenever it dies, waiting longer after each quick death."""
        while not self._stopping:
            await asyncio.sleep(POLL_SECONDS)
            process = self._process
            if process is not None and process.poll() is None:
                if self.started_at is not None and time.monotonic() - self.started_at > STABLE_SECONDS:
                    self._backoff = BACKOFF_FIRST_SECONDS
                continue
            if process is not None:  # it died (else a restart failed and is tried again)
                self.last_exit = _describe_exit(process.returncode)
                logger.error("managed upstream %s (pid %d) %s; restarting it in %.0f s", self.name, process.pid, self.last_exit, self._backoff)
                self._on_down(f"managed upstream {self.last_exit}; restarting")
            self.state = "restarting"
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_SECONDS)
            self.restarts += 1
            try:
                await self._spawn_and_wait()
            except EngineUnavailableError as error:
                logger.error("%s; trying again in %.0f s", error, self._backoff)
                await self._terminate()
                continue
            self.state = "running"
            back = self._on_up()
            if back is not None:
                await back  # the pool checks it again: up, with its model's facts


def _pump(stream: IO[bytes] | None, name: str) -> None:
    """The child's output, line by line, into this server's log."""
    if stream is None:
        return
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                logger.info("[%s] %s", name, line)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"died of {signal.Signals(-code).name}"
    return f"exited with {code}"


def _dies_with_this_process() -> Callable[[], None] | None:
    # server.process_tree is standard library only; imported late, as it sits in the HTTP package.
    from server.process_tree import dies_with_this_process

    try:
        return dies_with_this_process()
    except RuntimeError:  # not on the main thread: the child would die with this thread
        logger.warning("a managed upstream started off the main thread is not tied to this process's life")
        return None
