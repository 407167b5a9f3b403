"""The models this server can serve: the entries of models.yaml (JARVIS_MODELS_FILE), or the one
model configured in .env. Errors name the entry and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backends import ENGINE_OPTIONS
from service.settings import Settings

EngineName = Literal["llama_cpp", "vllm"]


class RegistryError(ValueError):
    """models.yaml cannot be used; the message names the entry and the field."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(min_length=1, description="the name requests use")
    engine: EngineName
    model: str = Field("", description="GGUF path, HF id or folder; empty = the packaged model")
    aliases: tuple[str, ...] = ()
    chat_format: str = "auto"
    context_size: int | None = Field(None, ge=256)
    max_tokens: int | None = Field(None, ge=1)
    tool_support: Literal["auto", "native", "react", "none"] = "auto"
    keep_alive_seconds: float | None = Field(None, ge=0, description="idle time before unloading; 0 = never")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_options(self) -> ModelEntry:
        allowed = ENGINE_OPTIONS[self.engine]
        for name, value in self.options.items():
            if name not in allowed:
                raise ValueError(f"options.{name} is not an option of the {self.engine} engine (known: {', '.join(sorted(allowed))})")
            expected = allowed[name]
            ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ValueError(f"options.{name} must be {expected.__name__}, got {value!r}")
        return self

    def names(self) -> tuple[str, ...]:
        return (self.alias, *self.aliases)


def load_registry(settings: Settings) -> list[ModelEntry]:
    if settings.models_file is None:
        return [entry_from_settings(settings)]
    return read_models_file(settings.models_file)


def entry_from_settings(settings: Settings) -> ModelEntry:
    """The one model of .env as a registry entry."""
    model = settings.model_name
    alias = Path(model).name.removesuffix(".gguf") if model else "gemma-3-270m-q4_k_m"
    engine = settings.inference_engine
    options: dict[str, Any] = {"parallel": settings.parallel, "max_queue": settings.max_queue, "n_gpu_layers": settings.n_gpu_layers}
    if settings.n_threads is not None:
        options["n_threads"] = settings.n_threads
    if engine == "vllm":
        options = settings.vllm_options()
    return ModelEntry(
        alias=alias,
        engine=engine,
        model=model,
        aliases=tuple(settings.model_aliases()),
        chat_format=settings.chat_format,
        tool_support=settings.tool_support,
        options=options,
    )


def read_models_file(path: Path) -> list[ModelEntry]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RegistryError(f"JARVIS_MODELS_FILE={path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise RegistryError(f"{path}: not valid YAML: {error}") from None
    raw_entries = document.get("models") if isinstance(document, dict) else document
    if not isinstance(raw_entries, list) or not raw_entries:
        raise RegistryError(f"{path}: expected a non-empty list of models (a top-level 'models:' list)")
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_entries, start=1):
        label = f"{path}: entry {number}" + (f" ({raw.get('alias')!r})" if isinstance(raw, dict) and raw.get("alias") else "")
        if not isinstance(raw, dict):
            raise RegistryError(f"{label}: expected a mapping of fields")
        try:
            entry = ModelEntry(**raw)
        except ValidationError as error:
            problem = error.errors()[0]
            field = ".".join(str(part) for part in problem["loc"]) or "entry"
            raise RegistryError(f"{label}: field {field}: {problem['msg'].removeprefix('Value error, ')}") from None
        for name in entry.names():
            if name in seen:
                raise RegistryError(f"{label}: field alias: {name!r} is already used by entry {seen[name]}")
            seen[name] = number
        entries.append(entry)
    return entries
