"""The supervisor: `python main.py` runs the server as a child process (`server.worker`), forwards
stop signals to it and exits with its status. When the server dies of a signal (a native crash in
an engine has no Python exception and no log line of its own), it logs one line naming the signal
and the requests that were running, from the flight record the server keeps.

The worker leads its own process group, so what it starts (vLLM's engine core) is looked after
with it; the kernel sends the worker SIGKILL if the supervisor itself is killed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from server.process_tree import dies_with_this_process, end_process_group, running
from server.worker import configure_logging
from service.flight_recorder import FLIGHT_RECORD_ENV, read_flights
from service.settings import Settings

logger = logging.getLogger("jarvis.supervisor")

WORKER_COMMAND = (sys.executable, "-m", "server.worker")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Signals that stop the server, and the signal the worker gets for each.
STOP_SIGNALS = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}

# The signals Python's faulthandler catches to write every thread's stack before the process dies.
FAULT_SIGNALS = {signal.SIGSEGV, signal.SIGFPE, signal.SIGABRT, signal.SIGBUS, signal.SIGILL}

# What a death by this signal usually means, for the crash report.
SIGNAL_HINTS = {
    signal.SIGILL: "an instruction this CPU does not have: typically a native build made for another CPU",
    signal.SIGKILL: "killed from outside, often by the kernel's out-of-memory killer (see `dmesg`); "
    "no stack can be written",
}


class _Stop:
    """Stop signals received, forwarded to the worker once it exists."""

    def __init__(self) -> None:
        self.worker: subprocess.Popen | None = None
        self.sent: set[signal.Signals] = set()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.sent.add(STOP_SIGNALS[signal.Signals(signum)])
        self.forward()

    def forward(self) -> None:
        if self.worker is not None:
            for signum in self.sent:
                self.worker.send_signal(signum)


def supervise(settings: Settings) -> int:
    configure_logging(settings.effective_log_level)
    record = _flight_record_path(settings.cache_dir)
    env = _worker_environment(record)
    stop = _Stop()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    worker = None
    try:
        worker = subprocess.Popen(WORKER_COMMAND, env=env, start_new_session=True, preexec_fn=dies_with_this_process())
        stop.worker = worker
        stop.forward()  # a signal that came while the worker was being started
        returncode = worker.wait()
        died_at = time.time()
        if returncode >= 0:
            return returncode
        signum = signal.Signals(-returncode)
        if signum in stop.sent:
            return 0  # uvicorn re-raises the stop signal after its graceful shutdown: a clean stop
        _report_death(signum, record, died_at)
        return 128 + signum
    finally:
        if worker is not None:
            if worker.poll() is None:
                worker.terminate()
            if end_process_group(worker.pid):
                logger.warning("killed processes the server process left behind (its process group %d)", worker.pid)
        if record is not None:
            record.unlink(missing_ok=True)


def _worker_environment(record: Path | None) -> dict[str, str]:
    # The worker keeps the working directory (.env is read from it), so the project goes on its path.
    python_path = os.pathsep.join(filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": python_path}
    if record is not None:
        env[FLIGHT_RECORD_ENV] = str(record)
    return env


def crash_report(signum: signal.Signals, flights: str) -> str:
    """The one line that says how the server process died and which requests it was serving."""
    hint = SIGNAL_HINTS.get(signum)
    return f"the server process died of {signum.name} (signal {signum.value}) while serving: {flights}" + (
        f" [{hint}]" if hint else ""
    )


def _flight_record_path(cache_dir: Path) -> Path | None:
    folder = cache_dir / "run"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("no flight record (cannot create %s: %s): a crash report cannot name the requests", folder, error)
        return None
    for stale in folder.glob("flight-*"):  # left by supervisors that were killed
        pid = stale.name.removeprefix("flight-").split(".")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not running(int(pid))):
            stale.unlink(missing_ok=True)
    return folder / f"flight-{os.getpid()}.json"


def _running_requests(record: Path | None, died_at: float) -> str:
    if record is None:
        return "unknown requests (no flight record)"
    try:
        flights = read_flights(record)
    except (OSError, ValueError, TypeError) as error:
        return f"unknown requests (the flight record {record} is unreadable: {error})"
    return "; ".join(flight.describe(died_at) for flight in flights) or "no request"


def _report_death(signum: signal.Signals, record: Path | None, died_at: float) -> None:
    logger.critical(crash_report(signum, _running_requests(record, died_at)))
    if signum in FAULT_SIGNALS:
        logger.critical(
            "the stack of every thread of the server process at that moment is above in this log, after "
            "'Fatal Python error'; send this log, from its start, with a bug report"
        )
