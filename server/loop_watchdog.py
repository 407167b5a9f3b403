"""Notices when the server's event loop stopped running: every request, stream and health check
waits while it does, so a late answer in the log can be told apart from a slow engine."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.25
REPORT_AFTER_SECONDS = 1.0


async def watch_event_loop(check_seconds: float = CHECK_SECONDS, report_after: float = REPORT_AFTER_SECONDS) -> None:
    """Sleeps `check_seconds` at a time and logs a warning when a wake-up came more than
    `report_after` seconds late: code held the loop, or the process got no CPU for that long."""
    loop = asyncio.get_running_loop()
    while True:
        asleep_since = loop.time()
        await asyncio.sleep(check_seconds)
        late = loop.time() - asleep_since - check_seconds
        if late > report_after:
            logger.warning("the event loop did not run for %.1f s: requests waited that long (code held it, or the process got no CPU)", late)
