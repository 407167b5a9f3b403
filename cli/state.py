"""What every command shares: the .env it reads, the settings, the server connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from backends.kinds import engine_names, local_engine_names
from cli.connection import Connection
from cli.errors import CliError, ExitCode
from service.model_registry import ModelEntry, RegistryError, load_registry
from service.settings import Settings, SettingsError, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_env_file() -> Path | None:
    """The .env of the current folder, else the project's (where ./run.sh serves from)."""
    for candidate in (Path.cwd() / ".env", PROJECT_ROOT / ".env"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class State:
    env_file: Path | None
    url: str | None = None
    admin_key: str | None = None
    json: bool = False
    _settings: Settings | None = field(default=None, init=False)

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(check_registry=False, _env_file=self.env_file)
            except SettingsError as error:
                raise CliError(f"{self.env_file or 'settings'}: {error}", ExitCode.BAD_INPUT) from None
        return self._settings

    def entries(self) -> list[ModelEntry]:
        try:
            return load_registry(self.settings())
        except RegistryError as error:
            raise CliError(str(error), ExitCode.BAD_INPUT) from None

    def connection(self) -> Connection:
        if self.url:
            key = self.admin_key or _secret(self._settings_or_none(), "admin_key")
            return Connection(self.url.rstrip("/"), key)
        settings = self.settings()
        return Connection(settings.local_url, self.admin_key or _secret(settings, "admin_key"))

    def _settings_or_none(self) -> Settings | None:
        try:
            return self.settings()
        except CliError:
            return None  # with --url, a broken .env does not stop commands that only talk to the server


def _secret(settings: Settings | None, name: str) -> str | None:
    value = getattr(settings, name, None) if settings is not None else None
    return value.get_secret_value() if value is not None else None


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of tables")]


def command_state(context: typer.Context, as_json: bool) -> State:
    """The shared state, with this command's --json."""
    state: State = context.obj
    state.json = state.json or as_json
    return state


# The engine kinds as a choice typer shows and checks: those that run a model here (switch,
# add-model), and every kind (backend options).
EngineChoice = Enum("EngineChoice", {name: name for name in local_engine_names()}, type=str)  # type: ignore[misc]
EngineKindChoice = Enum("EngineKindChoice", {name: name for name in engine_names()}, type=str)  # type: ignore[misc]
