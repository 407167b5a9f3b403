"""Real tier: `python main.py` is a supervisor over the server process. A native crash of the server
is reported with the signal, the requests it was serving and the stack of every thread; SIGTERM
stops it cleanly; and a pytest killed mid-run leaves no server process behind."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest

from server.process_tree import dies_with_this_process
from tests.conftest import ROOT, start_live_server, stop_live_server
from tests.process_table import alive, children, command_line, descendants, start_time, wait_until, with_environment

pytestmark = pytest.mark.real

SMALL_SERVER = {"JARVIS_INFERENCE_ENGINE": "llama_cpp", "JARVIS_CONTEXT_SIZE": "512", "JARVIS_PARALLEL": "1"}
# Greedy, the packaged model writes this one to max_tokens (measured: 100 of 100): the request
# is still running when the server is killed.
LONG_ANSWER = {
    "model": "any",
    "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
    "max_tokens": 100,
    "temperature": 0,
    "stream": True,
}


def test_a_crash_is_reported_with_the_signal_the_running_request_and_every_stack(tmp_path: Path) -> None:
    server = start_live_server(tmp_path, **SMALL_SERVER)
    try:
        (worker,) = children(server.process.pid)
        with httpx.stream("POST", f"{server.api_url}/chat/completions", json=LONG_ANSWER, timeout=60) as response:
            events = (json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {"))
            request_id = next(events)["id"]
            first_text = next(events)
            assert first_text["choices"][0]["finish_reason"] is None, first_text
            os.kill(worker, signal.SIGSEGV)
            with pytest.raises(httpx.TransportError):  # the stream breaks off: its server is gone
                for _ in events:
                    pass
        returncode = server.process.wait(timeout=60)
    finally:
        stop_live_server(server)
    log = server.log_path.read_text()
    assert returncode == 128 + signal.SIGSEGV
    report = [line for line in log.splitlines() if "the server process died of" in line]
    assert len(report) == 1, log
    model = "gemma-3-270m-q4_k_m"
    assert f"died of SIGSEGV (signal 11) while serving: {request_id.removeprefix('chatcmpl-')} (model {model}, llama_cpp engine, " in report[0]
    assert "prompt tokens, started " in report[0]
    # faulthandler's dump, before the report: every thread, the llama.cpp decode loop among them.
    dump = log[log.index("Fatal Python error: Segmentation fault") : log.index(report[0])]
    assert "Current thread 0x" in dump and "llama_cpp_engine.py" in dump, dump
    assert "the stack of every thread of the server process at that moment is above in this log" in log


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = start_live_server(tmp_path, **SMALL_SERVER)
    try:
        (worker,) = children(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(timeout=60)
    finally:
        stop_live_server(server)
    log = server.log_path.read_text()
    assert returncode == 0, log
    assert not alive(worker)
    assert "Application shutdown complete" in log
    assert "died of" not in log and "Fatal Python error" not in log


CHILD_TEST = """
import time
from pathlib import Path

from tests.conftest import start_live_server


def test_serves_until_killed(tmp_path):
    start_live_server(tmp_path, {settings})
    Path({ready!r}).write_text("serving")
    time.sleep(600)
"""


# vLLM starts its engine core as a child of the server process; it must go too.
ENGINE_SERVERS = {
    "llama_cpp": SMALL_SERVER,
    "vllm": {"JARVIS_INFERENCE_ENGINE": "vllm", "JARVIS_CONTEXT_SIZE": "2048", "JARVIS_VLLM_MAX_MODEL_LEN": "2048"},
}


@pytest.mark.parametrize("engine", ["llama_cpp", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_a_killed_pytest_leaves_no_server_behind(tmp_path: Path, engine: str) -> None:
    marker = uuid.uuid4().hex
    ready = tmp_path / "ready"
    environment = {**ENGINE_SERVERS[engine], "JARVIS_TEST_MARKER": marker}
    settings = ", ".join(f"{name}={value!r}" for name, value in environment.items())
    test_file = tmp_path / "test_child.py"
    test_file.write_text(textwrap.dedent(CHILD_TEST).format(settings=settings, ready=str(ready)))
    log_path = tmp_path / "child-pytest.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=dies_with_this_process(),
        )
    try:
        assert wait_until(lambda: ready.exists() or child.poll() is not None, timeout=300), log_path.read_text()
        assert ready.exists(), f"the child pytest ended first:\n{log_path.read_text()}"
        marked = with_environment("JARVIS_TEST_MARKER", marker)
        (supervisor,) = [pid for pid in marked if command_line(pid).endswith("main.py")]
        server = {pid: start_time(pid) for pid in [supervisor, *descendants(supervisor)]}
        commands = {pid: command_line(pid) for pid in server}
        logging.getLogger(__name__).info("the server's processes: %s", commands)
        assert [command for command in commands.values() if command.endswith("-m server.worker")], commands
        if engine == "vllm":
            assert [command for command in commands.values() if "EngineCore" in command], commands

        def still_running() -> dict[int, str]:
            return {pid: commands[pid] for pid, started in server.items() if start_time(pid) == started} | {
                pid: command_line(pid) for pid in with_environment("JARVIS_TEST_MARKER", marker)
            }

        child.send_signal(signal.SIGKILL)
        child.wait()
        assert wait_until(lambda: not still_running(), timeout=15), still_running()
    finally:
        child.kill()
        child.wait()
