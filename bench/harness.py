"""Shared pieces of the benchmark scripts: start a server, time a streamed request, summarize."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.process_tree import dies_with_this_process

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    base_url: str
    start_seconds: float

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"


@contextlib.contextmanager
def serve(name: str, command: list[str], env: dict[str, str], ready_path: str, port: int, timeout: float = 900) -> Iterator[Server]:
    """Run `command` until `ready_path` answers 200; stop it afterwards. Its log goes to a temp file."""
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115 (kept for reading after the run)
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=dies_with_this_process()
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log.name}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{name} did not become ready in {timeout:.0f} s; see {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base_url + ready_path, timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        server = Server(name, base_url, time.monotonic() - started)
        logger.info("%s ready in %.1f s (log: %s)", name, server.start_seconds, log.name)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def jarvis_server(name: str = "jarvis", **settings: str) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("JARVIS_")}
    env = {**inherited, "JARVIS_HOST": "127.0.0.1", "JARVIS_PORT": str(port), "JARVIS_LOG_LEVEL": "WARNING", **settings}
    return serve(name, [sys.executable, "main.py"], env, "/health", port)


def llama_cpp_python_server(model: Path, n_ctx: int, threads: int) -> contextlib.AbstractContextManager[Server]:
    """llama-cpp-python's own OpenAI server on the same model (chatml format), for comparison."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--chat_format", "chatml",
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    return serve("llama-cpp-python server", command, dict(os.environ), "/v1/models", port)


@dataclass
class Timing:
    sent: float
    first: float | None
    last: float | None
    chunks: int  # content chunks; one per token on these servers
    finish_reason: str | None
    longest_gap: float = 0.0  # seconds between two content chunks, at most

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.sent

    def decode_rate(self) -> float:
        """Tokens per second after the first token."""
        assert self.first is not None and self.last is not None and self.chunks > 1
        return (self.chunks - 1) / (self.last - self.first)


def stream(client: httpx.Client, path: str, body: dict) -> Timing:
    """POST a streamed request and time its content chunks."""
    import json

    sent = time.perf_counter()
    first = last = None
    chunks = 0
    longest_gap = 0.0
    finish_reason = None
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                content = choice.get("text") or (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    longest_gap = max(longest_gap, now - last) if last is not None else 0.0
                    first = first or now
                    last = now
                    chunks += 1
                finish_reason = choice.get("finish_reason") or finish_reason
    return Timing(sent, first, last, chunks, finish_reason, longest_gap)


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_line(label: str, value: float, baseline: float, target: str) -> str:
    return f"{label:<62} {value / baseline:6.3f}   (target {target})"
