"""Processes die with the process that started them: a Popen child armed with
`dies_with_this_process()`, and a process started through multiprocessing (as vLLM starts its engine
core), whose parent watch is armed the way `server/worker.py` arms it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from server.process_tree import dies_with_this_process
from tests.conftest import ROOT
from tests.process_table import alive, wait_until

# A stand-in for server/worker.py, armed by the same two calls.
MIDDLE = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from server.process_tree import children_stop_with_this_process, watch_spawning_parent

    if __name__ == "__mp_main__":
        watch_spawning_parent()

    def serve():
        print(os.getpid(), flush=True)  # armed by now: the watch starts before the target runs
        time.sleep(600)

    if __name__ == "__main__":
        children_stop_with_this_process()
        multiprocessing.get_context(sys.argv[1]).Process(target=serve).start()
        time.sleep(600)
    """
)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_multiprocessing_child_stops_when_its_parent_is_killed(tmp_path: Path, method: str) -> None:
    script = tmp_path / "middle.py"
    script.write_text(MIDDLE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    middle = subprocess.Popen(
        [sys.executable, str(script), method], env=env, stdout=subprocess.PIPE, text=True,
        preexec_fn=dies_with_this_process(),
    )
    try:
        child = int(middle.stdout.readline())
        assert alive(child)
        middle.kill()
        middle.wait()
        assert wait_until(lambda: not alive(child), timeout=15), f"the {method} child {child} outlived its parent"
    finally:
        middle.kill()
        middle.wait()


def test_a_popen_child_dies_with_its_parent(tmp_path: Path) -> None:
    # The parent is a process we kill; its child was armed by dies_with_this_process().
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(
        """
        import subprocess, sys
        from server.process_tree import dies_with_this_process
        command = [sys.executable, "-c", "import time; time.sleep(600)"]
        child = subprocess.Popen(command, preexec_fn=dies_with_this_process())
        print(child.pid, flush=True)
        child.wait()
        """
    ))
    parent = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    child = int(parent.stdout.readline())
    assert alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert wait_until(lambda: not alive(child), timeout=15), f"child {child} outlived its SIGKILLed parent"


def test_only_the_main_thread_may_start_a_child_that_dies_with_it() -> None:
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            dies_with_this_process()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
