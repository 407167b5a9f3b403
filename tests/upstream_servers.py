"""Live upstream servers for the remote-model tests: this server on the packaged model (small
context, one thread, so several fit on two cores), llama-cpp-python's own server as a foreign
upstream, and the means to kill, freeze and restart them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.process_tree import dies_with_this_process
from service.model_files import packaged_model_path
from service.paths import default_cache_dir
from tests.conftest import LiveServer, free_port, start_live_server

UPSTREAM_ENV = {
    "JARVIS_INFERENCE_ENGINE": "llama_cpp",
    "JARVIS_CONTEXT_SIZE": "1024",
    "JARVIS_PARALLEL": "2",
    "JARVIS_N_THREADS": "1",
    "JARVIS_MODEL_ALIAS": "jarvis",
}


def start_upstream(tmp_dir: Path, port: int | None = None) -> LiveServer:
    """This server on the packaged model, as an upstream."""
    return start_live_server(tmp_dir, port=port, **UPSTREAM_ENV)


def packaged_model() -> Path:
    return packaged_model_path(Path(os.environ.get("JARVIS_CACHE_DIR") or default_cache_dir()))


def start_llama_cpp_python(tmp_dir: Path) -> LiveServer:
    """llama-cpp-python's server on the packaged model. It cuts a running answer when another
    request comes unless told not to (--interrupt_requests false)."""
    port = free_port()
    log_path = tmp_dir / f"llama-cpp-python-{port}.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(packaged_model()), "--n_ctx", "1024", "--n_threads", "1",
        "--interrupt_requests", "false", "--host", "127.0.0.1", "--port", str(port),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=dies_with_this_process())
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-cpp-python's server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/openapi.json", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"llama-cpp-python's server did not answer:\n{log_path.read_text()}")


def worker_pid(server: LiveServer) -> int:
    """The server process under a Jarvis supervisor (`python main.py` runs it as its child)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def kill(server: LiveServer) -> None:
    """SIGKILL, as a crash or a pulled plug: the supervisor, and its server process with it."""
    worker = worker_pid(server) if server.process.poll() is None else None
    server.process.kill()
    server.process.wait(timeout=30)
    if worker is not None:
        wait_gone(worker)


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def freeze(server: LiveServer) -> int:
    """Stop the server process (SIGSTOP): it accepts connections but answers nothing."""
    pid = worker_pid(server)
    os.kill(pid, signal.SIGSTOP)
    return pid


def thaw(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def port_of(server: LiveServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])
