"""The flight record: the generations running right now, kept in a small file so that, when the
server process dies of a native crash (no Python exception, no log line), the supervisor can say
which requests it was serving.

    flight_recorder.begin(request_id, model, detail)   # a generation starts
    flight_recorder.end(request_id)                    # it ends, however it ends

The file is rewritten only when a generation starts or ends, never per token: one small JSON
write and an atomic rename. The supervisor names the file in JARVIS_FLIGHT_RECORD; without it
(the server run on its own, the fast tests) nothing is written.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FLIGHT_RECORD_ENV = "JARVIS_FLIGHT_RECORD"


@dataclass(frozen=True)
class Flight:
    request_id: str
    model: str
    detail: str
    started: float  # time.time() when the generation began

    def describe(self, now: float) -> str:
        return f"{self.request_id} (model {self.model}, {self.detail}, started {now - self.started:.1f} s before)"


class FlightRecorder:
    """Keeps the running generations and mirrors them into `path` (None: memory only)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()
        self._write_failed = False

    def begin(self, request_id: str, model: str, detail: str) -> None:
        with self._lock:
            self._flights[request_id] = Flight(request_id, model, detail, time.time())
            self._write()

    def end(self, request_id: str) -> None:
        with self._lock:
            if self._flights.pop(request_id, None) is not None:
                self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        staging = self._path.with_name(self._path.name + ".new")
        try:
            staging.write_text(json.dumps([asdict(flight) for flight in self._flights.values()]))
            os.replace(staging, self._path)  # a reader never sees half a file
        except OSError as error:
            if not self._write_failed:  # a full disk must not fail requests or flood the log
                logger.warning("cannot write the flight record %s: %s", self._path, error)
                self._write_failed = True


def read_flights(path: Path) -> list[Flight]:
    """The generations a flight record lists; none when the file does not exist."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [Flight(**entry) for entry in entries]


@functools.cache
def _recorder() -> FlightRecorder:
    path = os.environ.get(FLIGHT_RECORD_ENV)
    return FlightRecorder(Path(path) if path else None)


def begin(request_id: str, model: str, detail: str) -> None:
    """Record that a generation started; `detail` is a short human description (engine, sizes)."""
    _recorder().begin(request_id, model, detail)


def end(request_id: str) -> None:
    """Record that a generation ended (finished, failed or cancelled)."""
    _recorder().end(request_id)
