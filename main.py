"""Entry point: `python main.py` serves the configured model; `python main.py --help` lists the
settings (environment variables or .env). The server runs in a child process under a small
supervisor (`server/supervisor.py`) that reports how it ended, a native crash included."""

from __future__ import annotations

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

    from server.supervisor import supervise

    return supervise(settings)


if __name__ == "__main__":
    sys.exit(main())
