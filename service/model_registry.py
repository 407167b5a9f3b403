"""The models this server can serve: the entries of a models.yaml registry, or the one model
configured in .env. Errors name the entry and the field.

Which registry: JARVIS_MODELS_FILE when set; else `<cache dir>/models.yaml` when the admin API
has written one (a server started from .env alone writes it on its first registry change);
else the one model of .env."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backends import preferred_engine
from backends.kinds import ENGINE_KINDS, engine_kind, engine_names
from service.settings import Settings, SettingsError

EngineName = Literal[engine_names()]  # type: ignore[valid-type]
REGISTRY_FILE_NAME = "models.yaml"


class RegistryError(SettingsError):
    """The registry cannot be used; the message names the entry and the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OptionError(ValueError):
    """An engine option of an entry is unknown or invalid; `field` is its path (options.NAME)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ModelSource(BaseModel):
    """What `jarvis add-model` read about the model; informative, never needed to serve it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["gguf", "hf-folder", "hf-id", "vllm-command"]
    local: bool = True  # false: an HF id vLLM fetches on first load
    architecture: str | None = None
    quantization: str | None = None
    dtype: str | None = None
    context_length: int | None = None
    embedded_chat_template: bool | None = None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Changing any of these on a loaded model means loading it again.
    RELOAD_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"engine", "model", "chat_format", "context_size", "options", "warm_prompts", "warm_when"}
    )

    alias: str = Field(min_length=1, description="the name requests use")
    engine: EngineName
    model: str = Field("", description="GGUF path, HF id or folder; empty = the packaged model")
    aliases: tuple[str, ...] = ()
    chat_format: str = "auto"
    context_size: int | None = Field(None, ge=256)
    max_tokens: int | None = Field(None, ge=1)
    tool_support: Literal["auto", "native", "react", "none"] = "auto"
    keep_alive_seconds: float | None = Field(None, ge=0, description="idle time before unloading; 0 = never")
    fallback: str | None = Field(None, min_length=1, description="the alias of the model that serves when this one cannot")
    priority: int = Field(0, description="priority of requests that name no priority (higher is served first)")
    warm_prompts: Path | None = Field(
        None, description="a JSON or YAML file of conversations ({messages, tools}) prefilled when the model loads"
    )
    warm_when: Literal["before_ready", "after_ready"] = Field(
        "before_ready", description="prefill the warm prompts before the model serves, or right after"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    source: ModelSource | None = None

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_options(self) -> ModelEntry:
        kind = engine_kind(self.engine)
        for name, value in self.options.items():
            option = kind.option(name)
            if option is None:
                known = ", ".join(sorted(kind.option_names))
                raise OptionError(f"options.{name}", f"not an option of the {self.engine} engine (known: {known})")
            problem = option.problem(value)
            if problem:
                raise OptionError(f"options.{name}", problem)
        return self

    def names(self) -> tuple[str, ...]:
        return (self.alias, *self.aliases)

    def for_engine(self, engine: str) -> ModelEntry:
        """This entry on another engine kind, keeping the options that kind has too."""
        kind = engine_kind(engine)
        options = {name: value for name, value in self.options.items() if kind.option(name) is not None}
        return self.model_copy(update={"engine": engine, "options": options})

    def document(self) -> dict[str, Any]:
        """The entry as written in models.yaml: the fields that differ from their defaults."""
        written = self.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        written["engine"] = self.engine  # always written, though it is never defaulted
        return {name: written[name] for name in type(self).model_fields if name in written}


def registry_path(settings: Settings) -> Path | None:
    """The registry file in use, or None for the one model of .env."""
    if settings.models_file is not None:
        return settings.models_file
    written = written_registry_path(settings)
    return written if written.is_file() else None


def written_registry_path(settings: Settings) -> Path:
    """Where a server started from .env alone writes its registry on the first change."""
    return settings.cache_dir / REGISTRY_FILE_NAME


def load_registry(settings: Settings) -> list[ModelEntry]:
    path = registry_path(settings)
    if path is None:
        return [entry_from_settings(settings)]
    return read_models_file(path)


def entry_from_settings(settings: Settings) -> ModelEntry:
    """The one model of .env as a registry entry. Its engine options come from the settings when
    it is loaded, so the entry carries none."""
    model = settings.model_name
    engine = settings.inference_engine
    if engine not in ENGINE_KINDS:  # auto is resolved before this; fallback starts on the preferred engine
        engine, _ = preferred_engine(settings.preferred_engine)
    default_alias = "gemma-3-270m-q4_k_m" if ENGINE_KINDS[engine].local else "remote"
    alias = Path(model).name.removesuffix(".gguf") if model else default_alias
    return ModelEntry(
        alias=alias,
        engine=engine,
        model=model,
        aliases=tuple(settings.model_aliases()),
        chat_format=settings.chat_format,
        tool_support=settings.tool_support,
    )


def read_models_file(path: Path) -> list[ModelEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RegistryError(f"JARVIS_MODELS_FILE={path}: cannot read it ({error.strerror})") from None
    return parse_registry_text(text, str(path))


def parse_registry_text(text: str, label: str) -> list[ModelEntry]:
    """The entries of a models.yaml text; what a start reads, and what every change is checked with."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RegistryError(f"{label}: not valid YAML: {' '.join(str(error).split())}") from None
    raw_entries = document.get("models") if isinstance(document, dict) else document
    if not isinstance(raw_entries, list) or not raw_entries:
        raise RegistryError(f"{label}: expected a non-empty list of models (a top-level 'models:' list)")
    return validate_entries(raw_entries, label)


def validate_entries(raw_entries: list[Any], label: str) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_entries, start=1):
        where = f"{label}: entry {number}" + (f" ({raw.get('alias')!r})" if isinstance(raw, dict) and raw.get("alias") else "")
        entry = validate_entry(raw, where)
        for name in entry.names():
            if name in seen:
                raise RegistryError(f"{where}: field alias: {name!r} is already used by entry {seen[name]}", "alias")
            seen[name] = number
        entries.append(entry)
    _check_fallbacks(entries, label)
    return entries


def _check_fallbacks(entries: list[ModelEntry], label: str) -> None:
    """A fallback names another entry, by its alias or one of its names, and is not itself a model that falls back."""
    by_name = {name: entry for entry in entries for name in entry.names()}
    for number, entry in enumerate(entries, start=1):
        if entry.fallback is None:
            continue
        where = f"{label}: entry {number} ({entry.alias!r}): field fallback"
        target = by_name.get(entry.fallback)
        if target is None:
            raise RegistryError(f"{where}: no entry is named {entry.fallback!r}; name another model of this registry", "fallback")
        if target is entry:
            raise RegistryError(f"{where}: a model cannot be its own fallback", "fallback")
        if target.fallback is not None:
            raise RegistryError(
                f"{where}: {entry.fallback!r} falls back to {target.fallback!r} itself; a fallback must be a model that serves on its own",
                "fallback",
            )


def validate_entry(raw: object, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected a mapping of fields")
    try:
        return ModelEntry(**raw)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, OptionError):  # raised across fields: it names its own
            field, message = cause.field, cause.problem
        raise RegistryError(f"{where}: field {field or 'entry'}: {message}", field or None) from None
