"""The server's event-loop watchdog: a loop held by blocking code is reported with how long."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from server.loop_watchdog import watch_event_loop


async def _watch_while(hold: float, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.set_level(logging.WARNING, logger="server.loop_watchdog")
    watcher = asyncio.create_task(watch_event_loop(check_seconds=0.02, report_after=0.4))
    await asyncio.sleep(0.1)
    time.sleep(hold)  # blocking code on the loop, as a synchronous call would be
    await asyncio.sleep(0.1)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    return [record.getMessage() for record in caplog.records]


async def test_a_held_loop_is_reported_with_how_long(caplog: pytest.LogCaptureFixture) -> None:
    messages = await _watch_while(0.8, caplog)
    assert len(messages) == 1, messages
    seconds = float(messages[0].split("for ")[1].split(" s")[0])
    assert seconds >= 0.7, messages[0]  # the hold, less one check interval; a busy machine adds to it


async def test_a_loop_that_keeps_running_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert await _watch_while(0.0, caplog) == []
