"""Processes that never outlive the process that started them (Linux).

- `dies_with_this_process()`: a `preexec_fn` for `subprocess.Popen`. The kernel sends the child
  SIGKILL when its parent dies, however the parent dies (SIGKILL and crashes included).
- `children_stop_with_this_process()`: for children we do not start ourselves (vLLM starts its
  engine core through multiprocessing), a thread in each that stops it once its parent is gone.
- `end_process_group()`: wait for a process group to empty, SIGKILL what is left after a grace.

Standard library only: tests and the supervisor import it before anything heavy.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STOP_GRACE_SECONDS = 5.0
GROUP_GRACE_SECONDS = 2 * STOP_GRACE_SECONDS  # longer than a watched child takes to stop
PARENT_POLL_SECONDS = 0.5
SPAWNING_PARENT_ENV = "JARVIS_SPAWNING_PARENT"  # pid a spawned child expects as its parent


def dies_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` that ties the child's life to this process: SIGKILL when this process dies.

    The kernel sends the signal when the *thread* that forked exits, so this must be called (and
    Popen run) on the main thread. None where prctl does not exist (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "start child processes from the main thread: the kernel kills them when the thread that forked them ends"
        )
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child only calls it
    parent = os.getpid()

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os._exit(1)

    return arm


def children_stop_with_this_process() -> None:
    """Processes this one starts through multiprocessing (vLLM's engine core) stop when it is gone.

    A forked child is armed by a fork hook registered here. A spawned child runs a fresh
    interpreter that imports this process's main module as `__mp_main__`: that module calls
    `watch_spawning_parent()` under that name (see server/worker.py)."""
    os.environ[SPAWNING_PARENT_ENV] = str(os.getpid())
    os.register_at_fork(after_in_child=lambda: _watch_parent(os.getppid()))


def watch_spawning_parent() -> None:
    """In a process multiprocessing spawned from a process that called
    `children_stop_with_this_process()`: stop when that parent is gone (or already is)."""
    parent = os.environ.get(SPAWNING_PARENT_ENV)
    if parent:
        _watch_parent(int(parent))


def _watch_parent(parent: int) -> None:
    """A thread that stops this process once `parent` is no longer its parent: SIGTERM to itself
    (the process's own handler shuts down cleanly), SIGKILL after a grace. It polls getppid()
    rather than using PR_SET_PDEATHSIG, which fires when the parent's *thread* that started this
    process ends (vLLM starts its engine core from a worker thread)."""
    os.environ[SPAWNING_PARENT_ENV] = str(os.getpid())  # for the processes this one spawns

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        logger.warning("parent process %d is gone: stopping this process (%d)", parent, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def end_process_group(pgid: int, grace: float = GROUP_GRACE_SECONDS) -> bool:
    """Wait up to `grace` seconds for every process of the group to exit on its own (a child of
    a dead server process stops itself, see `children_stop_with_this_process`), then SIGKILL those
    left. Returns whether any
    process had to be killed."""
    deadline = time.monotonic() + grace
    while _signal_group(pgid, 0):
        if time.monotonic() >= deadline:
            return _signal_group(pgid, signal.SIGKILL)
        time.sleep(0.05)
    return False


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True
