"""The command line and environment of an upstream this server starts: the registry's engine
options turned back into the engine server's own arguments (the reverse of the `vllm serve`
parser, `service/vllm_command.py`), or this server's own settings for `via: jarvis`."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import EngineError
from backends.descriptor import EngineKind
from backends.remote.config import LaunchSpec

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
# What a managed Jarvis must not inherit from this server: its registry, keys and address.
_NOT_INHERITED = ("JARVIS_", "DEBUG")


@dataclass(frozen=True)
class Launch:
    command: list[str]
    env: dict[str, str]  # added to this process's environment (None values removed)
    flavour: str  # how this server talks to what it starts
    unmapped: list[str]  # options the server has no argument for (logged, not passed)


def launch_command(spec: LaunchSpec, model: str, context_size: int, host: str, port: int, api_key: str | None = None) -> Launch:
    """The command that starts `spec` listening on host:port, serving `model`."""
    from backends.kinds import engine_kind

    kind = engine_kind(spec.engine)
    if spec.via == "jarvis":
        return _jarvis_launch(kind, spec, model, context_size, host, port, api_key)
    return _native_launch(kind, spec, model, context_size, host, port, api_key)


def option_arguments(kind: EngineKind, options: dict[str, Any]) -> tuple[list[str], dict[str, str], list[str]]:
    """`options` as the engine server's arguments and environment; the names it cannot take."""
    server = kind.server
    assert server is not None
    arguments: list[str] = []
    env: dict[str, str] = {}
    unmapped: list[str] = []
    for name, value in options.items():
        option = kind.option(name)
        if option is None or value is None:
            continue
        flag = server.flag_of(option)
        if flag is not None:
            if option.type is bool:
                arguments.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                arguments += [f"--{flag}", _text(value)]
        elif option.environment is not None and server.flags is None:
            env[option.environment] = _text(value)
        else:
            unmapped.append(name)
    return arguments, env, unmapped


def _native_launch(kind: EngineKind, spec: LaunchSpec, model: str, context_size: int, host: str, port: int, api_key: str | None) -> Launch:
    server = kind.server
    assert server is not None
    if not model:
        raise EngineError(f"a managed {kind.label} server needs a model: set the entry's model or start.model")
    program = [sys.executable if word == "{python}" else word for word in server.program]
    model_words = [model] if server.model_flag is None else [f"--{server.model_flag}", model]
    arguments, env, unmapped = option_arguments(kind, dict(spec.options))
    if f"--{server.context_flag}" not in arguments:
        arguments += [f"--{server.context_flag}", str(spec.context_size or context_size)]
    if server.flavour == "vllm":
        # The name requests use, whatever path the model was loaded from.
        arguments += ["--served-model-name", model]
    if api_key:
        env["VLLM_API_KEY" if server.flavour == "vllm" else "API_KEY"] = api_key
    command = [*program, *model_words, *arguments, *server.fixed, "--host", host, "--port", str(port)]
    return Launch(command, {**env, **spec.env}, server.flavour, unmapped)


def _jarvis_launch(kind: EngineKind, spec: LaunchSpec, model: str, context_size: int, host: str, port: int, api_key: str | None) -> Launch:
    """This server's own process with `kind` inside: its settings as environment variables, its
    registry the one model (never this server's models.yaml, keys or port)."""
    env: dict[str, str] = {
        "JARVIS_HOST": host,
        "JARVIS_PORT": str(port),
        "JARVIS_INFERENCE_ENGINE": kind.name,
        "JARVIS_MODEL_NAME": model,
        "JARVIS_CONTEXT_SIZE": str(spec.context_size or context_size),
        "JARVIS_MODELS_FILE": "",
        "JARVIS_API_KEY": api_key or "",
        "JARVIS_ADMIN_KEY": "",
    }
    for name, value in spec.options.items():
        option = kind.option(name)
        if option is not None and value is not None:
            env[f"JARVIS_{kind.setting_name(option).upper()}"] = _text(value).lower() if isinstance(value, bool) else _text(value)
    command = [sys.executable, str(PROJECT_ROOT / "main.py")]
    return Launch(command, {**env, **spec.env}, "jarvis", [])


def child_environment(launch: Launch) -> dict[str, str]:
    """This process's environment for the child: without Jarvis settings when the child is a
    Jarvis (it gets its own), plus the launch's variables."""
    inherited = dict(os.environ)
    if launch.flavour == "jarvis":
        inherited = {key: value for key, value in inherited.items() if not key.startswith(_NOT_INHERITED)}
    # The project on the path, for `python main.py` started from any directory.
    inherited["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PROJECT_ROOT), inherited.get("PYTHONPATH"))))
    return {**inherited, **launch.env}


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)
