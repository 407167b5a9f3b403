"""The server process: settings, logging, the app under uvicorn. `python main.py` runs it as a
child (`python -m server.worker`) and reports how it ended; it can also run on its own.

A native crash (SIGSEGV, SIGILL, SIGABRT, SIGBUS, SIGFPE) gets Python's fault handler: the stack of
every thread goes to stderr, which is the supervisor's log."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys

from server.process_tree import children_stop_with_this_process, watch_spawning_parent
from service.settings import SettingsError, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # httpx logs every request a remote model makes to its upstreams at INFO; they show in DEBUG.
    logging.getLogger("httpx").setLevel(level if level == "DEBUG" else "WARNING")


def main() -> int:
    faulthandler.enable(all_threads=True)
    children_stop_with_this_process()
    # Python's default SIGINT handler would turn uvicorn's re-raised SIGINT into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2

    import uvicorn

    from server.app import create_app
    from server.http_config import uvicorn_options

    configure_logging(settings.effective_log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = uvicorn.Server(config)

    def request_shutdown() -> None:
        server.should_exit = True

    app.state.request_shutdown = request_shutdown
    logging.getLogger("jarvis").info(
        "serving on http://%s:%d — use base_url http://%s:%d/v1", settings.host, settings.port, settings.host, settings.port
    )
    server.run()
    return 1 if app.state.startup_failure else 0


if __name__ == "__mp_main__":
    # multiprocessing's spawn imports the parent's main module under this name in every process it
    # starts (vLLM's engine core): give it the same fault handler, and stop it once the server
    # process that started it is gone.
    faulthandler.enable(all_threads=True)
    watch_spawning_parent()

if __name__ == "__main__":
    sys.exit(main())
