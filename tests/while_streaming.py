"""Checks of what a live server does while it generates a stream, made robust against the machine.

These machines at times give a process no CPU for tens of seconds: on CI the server's log showed
vLLM generating and the server's event loop running on time (server/loop_watchdog.py said nothing)
while the test process sent nothing for 42 s and, another time, 65 s and then 22 s. A check that
looks at the server "while" a stream runs cannot tell a server that waited for the stream to end
from a test that was not running until it had. So an attempt counts only when the server's own
count of running sequences, asked after the look, shows the stream still generating: then all the
look saw happened while it did. An attempt the stream did not outlast proves nothing either way
and is made again; a server that answers only once streams end fails every attempt.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import openai

    from tests.conftest import LiveServer

log = logging.getLogger(__name__)

Seen = TypeVar("Seen")
ATTEMPTS = 4

# A prompt whose greedy continuation is " 13, 14, 15, ...": text without near ties.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
# A grammar with no end (every number must be followed by another): the model cannot stop, so a
# stream under it ends only at max_tokens or when the client closes it. Unconstrained, the counting
# ends wherever the model picks its end-of-turn token, and where that is depends on the CPU's
# arithmetic (vLLM computes in bfloat16).
ENDLESS_COUNTING_GRAMMAR = 'root ::= " " [0-9]+ "," root'
# As many tokens as the test servers' 2,048-token context leaves after COUNTING: about 40 s on
# llama.cpp and 85 s on vLLM on this 2-core machine, longer than the stalls seen so far.
ENDLESS_STREAM_TOKENS = 1_990


class ProcessStallWatch:
    """A thread that notes when this test process did not run for over a second, for failure
    messages that say which side stalled."""

    def __init__(self, every: float = 0.25, report_over: float = 1.0) -> None:
        self.every, self.report_over = every, report_over
        self.stalls: list[tuple[float, float]] = []  # (monotonic time the stall began, seconds)
        threading.Thread(target=self._watch, name="process-stall-watch", daemon=True).start()

    def _watch(self) -> None:
        while True:
            before = time.monotonic()
            time.sleep(self.every)
            late = time.monotonic() - before - self.every
            if late > self.report_over:
                self.stalls.append((before, late))

    def since(self, start: float) -> str:
        stalls = [f"{began - start:.1f} s in, for {seconds:.1f} s" for began, seconds in self.stalls if began >= start]
        return "the test process did not run " + "; ".join(stalls) if stalls else "the test process ran throughout"


@functools.cache
def stall_watch() -> ProcessStallWatch:
    """This process's one watch, started at its first use."""
    return ProcessStallWatch()


def while_a_stream_runs(
    server: LiveServer, client: openai.OpenAI, look: Callable[[openai.Stream], Seen], attempts: int = ATTEMPTS,
) -> Seen:
    """What `look(stream)` returns, from an attempt in which the server still generated the endless
    stream (open_endless_stream) after the look. The stream is then closed, and the server's count
    must fall to 0 within 30 s: only an abort inside the engine does that, as the stream would run
    on for far longer."""
    watch = stall_watch()
    tried: list[str] = []
    for attempt in range(1, attempts + 1):
        server.wait_until_generating(0)
        opened = time.monotonic()
        stream = open_endless_stream(client)
        try:
            running = server.generating_after_waiting(1, timeout=60) == 1
            seen = look(stream) if running else None
            outlasted = running and server.generating() == 1
        finally:
            stream.close()
        if outlasted:
            server.wait_until_generating(0, timeout=30)
            return seen
        why = "the stream had ended by the end of the look" if running else "the server never counted the stream as generating"
        tried.append(f"attempt {attempt}: {why} ({time.monotonic() - opened:.1f} s), {watch.since(opened)}")
        log.warning("inconclusive: %s", tried[-1])
    raise AssertionError(
        f"in none of {attempts} attempts did the server still generate the stream after the look: "
        + "; ".join(tried) + f"; {server.warnings_logged()}"
    )


def open_endless_stream(client: openai.OpenAI) -> openai.Stream:
    """A counting stream that the model cannot end: the server stays busy until it is closed."""
    return client.completions.create(
        model="x", prompt=COUNTING, max_tokens=ENDLESS_STREAM_TOKENS, temperature=0, stream=True,
        extra_body={"grammar": ENDLESS_COUNTING_GRAMMAR},
    )
