"""Fast tier: the "while a stream runs" check (tests/while_streaming.py) over a scripted server:
it passes only when the server still generates after the look, retries an attempt the stream did
not outlast, and fails a server that never generates past the look; and the watch that says when
the test process got no CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from tests.conftest import ROOT
from tests.while_streaming import ATTEMPTS, while_a_stream_runs


@dataclass
class ScriptedServer:
    """A server whose one stream generates from its opening until it is closed, or until the
    look's attempt number is in `ends_during_look`."""

    ends_during_look: set[int] = field(default_factory=set)
    running: bool = False
    attempts: int = 0
    aborted: int = 0

    def generating(self) -> float:
        return 1.0 if self.running else 0.0

    def generating_after_waiting(self, expected: float, timeout: float = 60) -> float:
        return self.generating()

    def wait_until_generating(self, expected: float, timeout: float = 60) -> None:
        assert self.generating() == expected

    def warnings_logged(self) -> str:
        return "the server's warnings:\n"

    # the client's side
    @property
    def completions(self) -> ScriptedServer:
        return self

    def create(self, **request: object) -> ScriptedStream:
        assert request["stream"] is True and request["extra_body"]["grammar"]
        self.attempts += 1
        self.running = True
        return ScriptedStream(self)

    def look(self, stream: ScriptedStream) -> int:
        if self.attempts in self.ends_during_look:
            self.running = False
        return self.attempts


@dataclass
class ScriptedStream:
    server: ScriptedServer

    def close(self) -> None:
        if self.server.running:
            self.server.aborted += 1
        self.server.running = False


def test_the_look_of_an_attempt_the_stream_outlasted_is_returned_and_the_stream_aborted() -> None:
    server = ScriptedServer()
    assert while_a_stream_runs(server, server, server.look) == 1
    assert (server.attempts, server.aborted, server.running) == (1, 1, False)


def test_an_attempt_the_stream_did_not_outlast_is_made_again() -> None:
    server = ScriptedServer(ends_during_look={1, 2})
    assert while_a_stream_runs(server, server, server.look) == 3


def test_a_server_whose_stream_never_outlasts_the_look_fails_with_every_attempt_said() -> None:
    server = ScriptedServer(ends_during_look=set(range(1, ATTEMPTS + 2)))
    with pytest.raises(AssertionError) as failed:
        while_a_stream_runs(server, server, server.look)
    message = str(failed.value)
    assert f"in none of {ATTEMPTS} attempts" in message and server.attempts == ATTEMPTS
    assert f"attempt {ATTEMPTS}: the stream had ended by the end of the look" in message
    assert "the test process ran throughout" in message


def test_the_stall_watch_reports_a_test_process_that_got_no_cpu() -> None:
    """A child process running the watch is stopped (SIGSTOP) for 2 s: it reports the stall."""
    child = subprocess.Popen(
        [sys.executable, "-c", STALL_REPORTER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "watching"
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(2)
    os.kill(child.pid, signal.SIGCONT)
    report, _ = child.communicate("report\n", timeout=30)
    assert report.startswith("the test process did not run 0."), report
    assert 1.5 < float(report.split("for ")[1].split(" s")[0]) < 4, report


STALL_REPORTER = """
import time
from tests.while_streaming import stall_watch
start = time.monotonic()
stall_watch()
print("watching", flush=True)
input()
time.sleep(0.5)  # the watch's next check, after the stop
print(stall_watch().since(start))
"""
