"""Entry point: `python main.py` serves the configured model; `python main.py --help` lists the
settings (environment variables or .env)."""

from __future__ import annotations

import logging
import sys

from service.settings import Settings, SettingsError, env_name, load_settings


def _print_help() -> None:
    lines = ["Jarvis LLM Proxy: an OpenAI-compatible server. Settings (environment or .env):", ""]
    for name, field in Settings.model_fields.items():
        lines.append(f"  {env_name(name)}\n      {field.description}")
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> int:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        _print_help()
        return 0
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2

    import uvicorn

    from server.app import create_app
    from server.http_config import uvicorn_options

    logging.basicConfig(
        level=settings.effective_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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


if __name__ == "__main__":
    sys.exit(main())
