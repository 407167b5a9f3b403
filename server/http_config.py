"""Everything uvicorn is told, in one place: `main.py` passes `uvicorn_options(settings)` to
`uvicorn.Config`."""

from __future__ import annotations

from server.http_protocol import guarded_protocol
from service.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        # h11 with header and body deadlines (uvicorn has no header timeout of its own).
        "http": guarded_protocol(settings.header_timeout, settings.body_timeout),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout,
        # SIGTERM/SIGINT: stop accepting, let running requests finish this long, then stop (the
        # engines save their prompt caches on the way out).
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # No route speaks WebSocket: an upgrade request is answered as plain HTTP, not upgraded.
        "ws": "none",
        "server_header": False,
        "log_config": None,  # uvicorn's loggers go to the handlers main.py sets up
    }
