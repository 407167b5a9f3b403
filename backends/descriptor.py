"""What an engine kind is, declared once: its name, its options (type, default, bounds,
description, and the name the engine's own tools give it), the class that runs it, what models it
can run and whether it can run on this machine. Settings, registry validation, the `vllm serve`
parser, the admin API and the CLI all read these declarations (`backends.kinds`)."""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ModelFormat = Literal["gguf", "hf", "remote"]  # a GGUF file; an HF folder or model id; a model another server runs


@dataclass(frozen=True)
class Availability:
    """Whether an engine kind can run here, and why (not)."""

    available: bool
    reason: str


@dataclass(frozen=True)
class EngineOption:
    """One engine option: a models.yaml `options:` key, a setting and an admin API field alike."""

    name: str
    type: Any  # int, float, bool, str, or a Literal of allowed strings
    default: Any  # None = unset: the engine decides (the description says how)
    description: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    flag: str | None = None  # the engine's own command-line flag (`vllm serve --max-model-len`)
    environment: str | None = None  # the engine's own environment variable for it
    engine_argument: bool = True  # passed to the engine's arguments unchanged
    # A deeper check of a valid-typed value (a list of upstreams): the problem, or None.
    check: Callable[[Any], str | None] | None = None

    @property
    def annotation(self) -> Any:
        return self.type | None if self.default is None else self.type

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else ()

    @property
    def type_name(self) -> str:
        if self.choices:
            return " or ".join(repr(choice) for choice in self.choices)
        return {list: "a list", dict: "a mapping"}.get(self.type, self.type.__name__)

    def bounds(self) -> dict[str, float]:
        return {name: value for name, value in (("ge", self.ge), ("gt", self.gt), ("le", self.le)) if value is not None}

    def problem(self, value: object) -> str | None:
        """Why `value` is not valid for this option (None when it is). Strict: "8" is not an int."""
        if value is None:
            return None if self.default is None else f"must be {self.type_name}, got None"
        if not self._type_matches(value):
            expected = f"one of {self.type_name}" if self.choices else self.type_name
            return f"must be {expected}, got {value!r}"
        if not self._within_bounds(value):
            return f"must be {self._range_text()}, got {value!r}"
        return self.check(value) if self.check is not None else None

    def _within_bounds(self, value: Any) -> bool:
        if not isinstance(value, int | float):
            return True
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.le is None or value <= self.le)
        )

    def _range_text(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"above {_number(self.gt)}")
        if self.ge is not None:
            parts.append(f"at least {_number(self.ge)}")
        if self.le is not None:
            parts.append(f"at most {_number(self.le)}")
        return " and ".join(parts)

    def _type_matches(self, value: object) -> bool:
        if self.choices:
            return value in self.choices
        if isinstance(value, bool):
            return self.type is bool
        if self.type is float:
            return isinstance(value, int | float)
        return isinstance(value, self.type)

    def describe(self) -> dict[str, object]:
        """The option as JSON, for the admin API and the CLI."""
        return {
            "name": self.name,
            "type": self.type_name,
            "default": self.default,
            "description": self.description,
            **({"range": self._range_text()} if self.bounds() else {}),
            **({"bounds": self.bounds()} if self.bounds() else {}),
            **({"choices": list(self.choices)} if self.choices else {}),
            **({"flag": f"--{self.flag}"} if self.flag else {}),
            **({"environment": self.environment} if self.environment else {}),
        }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class ServerLaunch:
    """How the engine kind runs as its own HTTP server, for an upstream this server starts and
    stops (a managed upstream): the command, and which option flags it takes. The options become
    `--flag value` through their declared `flag` (the reverse of the `vllm serve` parser)."""

    program: tuple[str, ...]  # the words before the model: ("vllm", "serve")
    model_flag: str | None  # None: the model is the word after the program; else its flag ("model")
    context_flag: str  # the flag that sets the context length
    flavour: str  # how this server talks to it (backends.remote.flavours)
    fixed: tuple[str, ...] = ()  # arguments always given (endpoints this server reads)
    # This server's flag for each option, where its flags are not the options' declared ones
    # (then only the options named here are passed).
    flags: dict[str, str] | None = None

    def flag_of(self, option: EngineOption) -> str | None:
        return self.flags.get(option.name) if self.flags is not None else option.flag


@dataclass(frozen=True)
class EngineKind:
    name: str  # what JARVIS_INFERENCE_ENGINE and a models.yaml entry's `engine` say
    label: str  # how people write it
    engine_class: str  # "module:Class", imported only when the engine is created
    options: tuple[EngineOption, ...]
    formats: tuple[ModelFormat, ...]  # the model sources it can run
    settings_prefix: str  # JARVIS_<prefix><OPTION> sets an option's server-wide default
    check: Callable[[], Availability]  # cheap: no heavy import
    # Its installed build in detail (version, CPU or GPU build, features); may start a child process.
    build: Callable[[Path], dict[str, object]] = lambda cache_dir: {}
    # Runs the model in this process from a file or HF id (and holds its memory here). A remote
    # kind does not: its model is a name another server knows, it takes no part in the engine
    # fallback and does not count against JARVIS_MAX_LOADED_MODELS.
    local: bool = True
    server: ServerLaunch | None = None  # how to run it as its own HTTP server, where it can be

    def option(self, name: str) -> EngineOption | None:
        return next((option for option in self.options if option.name == name), None)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)

    def setting_name(self, option: EngineOption) -> str:
        """The Settings field holding this option's server-wide default."""
        return f"{self.settings_prefix}{option.name}"

    def availability(self) -> Availability:
        return self.check()

    def runs(self, model_format: ModelFormat) -> bool:
        return model_format in self.formats

    def load_class(self) -> type:
        module_name, class_name = self.engine_class.split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def describe(self) -> dict[str, object]:
        availability = self.availability()
        return {
            "name": self.name,
            "label": self.label,
            "available": availability.available,
            "reason": availability.reason,
            "formats": list(self.formats),
            "local": self.local,
            "options": [option.describe() for option in self.options],
        }
