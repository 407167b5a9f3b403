"""The flight record (the generations running now, for the supervisor's crash report) and the
report line made from it; the facade records a generation for exactly as long as it runs."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.openai.chat import chat_input
from protocols.openai.schema import ChatCompletionRequest
from server.supervisor import SIGNAL_HINTS, crash_report
from service import flight_recorder
from service.flight_recorder import FLIGHT_RECORD_ENV, Flight, FlightRecorder, read_flights


def test_the_record_holds_the_running_generations(tmp_path: Path) -> None:
    path = tmp_path / "flight.json"
    recorder = FlightRecorder(path)
    recorder.begin("chatcmpl-a", "gemma", "llama_cpp engine, 12 prompt tokens")
    recorder.begin("chatcmpl-b", "gemma", "llama_cpp engine, 30 prompt tokens")
    recorder.end("chatcmpl-a")
    (running,) = read_flights(path)
    assert (running.request_id, running.model) == ("chatcmpl-b", "gemma")
    assert running.detail == "llama_cpp engine, 30 prompt tokens"
    recorder.end("chatcmpl-b")
    assert read_flights(path) == []
    assert sorted(item.name for item in tmp_path.iterdir()) == ["flight.json"]  # no staging file left


def test_without_a_path_nothing_is_written(tmp_path: Path) -> None:
    recorder = FlightRecorder(None)
    recorder.begin("chatcmpl-a", "gemma", "detail")
    recorder.end("chatcmpl-a")
    assert list(tmp_path.iterdir()) == []
    assert read_flights(tmp_path / "absent.json") == []


def test_the_crash_report_names_signal_request_model_and_age() -> None:
    flight = Flight("chatcmpl-abc", "gemma-3-270m-q4_k_m", "llama_cpp engine, 812 prompt tokens", started=100.0)
    assert crash_report(signal.SIGSEGV, flight.describe(now=100.4)) == (
        "the server process died of SIGSEGV (signal 11) while serving: chatcmpl-abc "
        "(model gemma-3-270m-q4_k_m, llama_cpp engine, 812 prompt tokens, started 0.4 s before)"
    )
    assert crash_report(signal.SIGILL, "no request").endswith(f"[{SIGNAL_HINTS[signal.SIGILL]}]")


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The process-wide recorder writing to a file of this test, as under the supervisor."""
    path = tmp_path / "flight.json"
    monkeypatch.setenv(FLIGHT_RECORD_ENV, str(path))
    flight_recorder._recorder.cache_clear()
    yield path
    flight_recorder._recorder.cache_clear()


CHAT = ChatCompletionRequest.model_validate({"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True})


async def test_a_stream_is_recorded_while_it_runs(record: Path, app_factory, fake_engine) -> None:
    app = await app_factory()
    fake_engine.queue("a", "b", "c")
    generation = await app.state.core.start(chat_input(CHAT))
    (running,) = read_flights(record)
    assert running.request_id == generation.id
    assert running.model == generation.model
    assert running.detail == f"fake engine, {len(fake_engine.requests[0].prompt_token_ids)} prompt tokens"
    assert (await generation.collect()).finish.reason == "stop"
    assert read_flights(record) == []


async def test_a_stream_closed_early_leaves_the_record(record: Path, app_factory, fake_engine) -> None:
    app = await app_factory()
    fake_engine.queue("a", "b", "c")
    generation = await app.state.core.start(chat_input(CHAT))
    assert len(read_flights(record)) == 1
    await generation.aclose()  # the client went away
    assert read_flights(record) == []
