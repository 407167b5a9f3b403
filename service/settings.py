"""Settings from the environment and `.env`. One field, one description: the description is the
`.env.example` comment and the `--help` text alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backends.descriptor import EngineKind
from backends.kinds import ENGINE_KINDS, engine_names, local_engine_names
from service.paths import default_cache_dir

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# A list read from one variable as comma-separated words (not JSON).
CommaList = Annotated[list[str], NoDecode]

MiB = 1024 * 1024
LocalEngineName = Literal[local_engine_names()]  # type: ignore[valid-type]
EngineSetting = Literal[(*engine_names(), "auto", "fallback")]  # type: ignore[valid-type]
_ENGINE_LIST = ", ".join(local_engine_names())


def _blank_to_none(cls: type, value: object) -> object:
    return None if value == "" else value


class CoreSettings(BaseSettings):
    """The settings other than engine options; `Settings` adds one field per engine option."""

    model_config = SettingsConfigDict(
        env_prefix="JARVIS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    inference_engine: EngineSetting = Field(
        "llama_cpp",
        description=f"Engine that runs the model in this process: {_ENGINE_LIST}, auto (vllm when "
        "it is installed and a GPU is present, else llama_cpp), or fallback (the preferred engine, and "
        "the other one when the model cannot start on it); or openai: the model runs on another "
        "server (JARVIS_OPENAI_BASE_URL), JARVIS_MODEL_NAME being its name there.",
    )
    preferred_engine: LocalEngineName | None = Field(
        None,
        description="With JARVIS_INFERENCE_ENGINE=fallback: the engine tried first. Empty = vllm where "
        "an NVIDIA GPU is present, else llama_cpp.",
    )
    models_file: Path | None = Field(
        None,
        description="A models.yaml registry of several models (see README). Empty = <cache dir>/models.yaml "
        "when the admin API has written one, else the one model below.",
    )
    model_name: str = Field(
        "",
        description="Model to serve: a GGUF file path (llama_cpp, vllm), or an HF model id or folder "
        "(vllm). Empty = the packaged gemma-3-270m Q4_K_M.",
    )
    model_alias: str = Field(
        "",
        description="Extra name (or comma-separated names) the loaded model answers to in /v1/models "
        "and the request's `model` field.",
    )
    chat_format: str = Field(
        "auto",
        description="Chat template: auto (the model's own, else by architecture), chatml, llama3, "
        "mistral, gemma, or a path to a Jinja2 template file.",
    )
    tool_support: Literal["auto", "native", "react", "none"] = Field(
        "auto",
        description="How tools reach the model: auto (as the chat format does), native (the template "
        "renders them), react (a ReAct text protocol), none (tools dropped with a warning).",
    )
    reasoning_field: Literal["reasoning_content", "reasoning", "none"] = Field(
        "reasoning_content",
        description="Where a model's thinking goes on OpenAI chat: reasoning_content, reasoning, or "
        "none (dropped). It never goes to content.",
    )
    responses_store_size: int = Field(
        256,
        ge=0,
        description="Responses API: how many recent responses are kept in memory for "
        "previous_response_id and GET /v1/responses/{id}; the least recently used goes first. 0 = none.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    context_size: int = Field(
        8192, ge=256, description="Context length in tokens (prompt + answer) per request."
    )
    max_tokens: int = Field(
        512, ge=1, description="Answer length limit used when a request gives no max_tokens."
    )
    shutdown_grace_seconds: float = Field(
        30, gt=0, description="On SIGTERM or SIGINT: how long running requests may take to finish before the server stops.",
    )
    max_loaded_models: int = Field(
        1, ge=1, description="Models kept loaded at once; loading another unloads the least recently used."
    )
    keep_alive_seconds: float = Field(
        0, ge=0, description="Unload a model idle this long (seconds). 0 = keep it loaded."
    )
    model_start_timeout: float = Field(
        600, gt=0, description="How long a request waits for its model to load (seconds)."
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, inference requests must send it as 'Authorization: Bearer <key>' or "
        "'x-api-key: <key>'. Empty = no auth (then only localhost, IP addresses and "
        "JARVIS_ALLOWED_HOSTS may be the Host).",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="Key for the /admin API, sent as 'Authorization: Bearer <key>' only. Empty = the "
        "admin API is off. Must differ from JARVIS_API_KEY.",
    )
    metrics_require_key: bool = Field(
        False, description="true = /metrics needs JARVIS_API_KEY too; false = /metrics is open."
    )
    allowed_hosts: CommaList = Field(
        [],
        description="Host names the server answers to besides localhost and IP addresses, "
        "comma-separated (homeassistant.lan, *.home.arpa for every subdomain, * for any). Checked "
        "when JARVIS_API_KEY is unset (against DNS rebinding), or when set here.",
    )
    cors_origins: CommaList = Field(
        [],
        description="Browser origins allowed to call the API from a web page (CORS), comma-separated, "
        "e.g. http://homeassistant.local:8123. Empty = no CORS headers.",
    )
    api_docs: bool = Field(
        False, description="true = serve /docs, /redoc and /openapi.json; false = they are 404."
    )
    max_body_bytes: int = Field(
        4 * MiB,
        ge=1024,
        description="Largest request body in bytes; a larger one is refused with 413 before it is "
        "read. 4 MiB holds a 32k-token prompt several times over even with every character "
        "JSON-escaped (about 0.8 MiB), leaving room for long tool lists and embedding batches.",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line plus headers in bytes; beyond it the answer is 431.",
    )
    header_timeout: float = Field(
        10,
        gt=0,
        description="Seconds a client has to send a request's headers, from the connection (or the "
        "request's first byte on a reused one); then 408 and the connection is closed.",
    )
    body_timeout: float = Field(
        30,
        gt=0,
        description="Seconds a client has to send a whole request body once its headers are in; "
        "then 408 (or the connection is closed if the answer has begun).",
    )
    keep_alive_timeout: float = Field(
        5, gt=0, description="Seconds an idle connection is kept open for the client's next request."
    )
    audit_secret: SecretStr | None = Field(
        None,
        description="Secret keying the HMAC-SHA256 that names keys in the audit trail. Empty = one is "
        "generated once and kept in <cache dir>/audit-secret (mode 0600).",
    )
    audit_log: Path | None = Field(
        None, description="File the admin audit trail is appended to. Empty = <cache dir>/audit.log."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where the assembled default model and converted models are kept.",
    )
    debug: bool = Field(
        False,
        validation_alias=AliasChoices("DEBUG", "JARVIS_DEBUG"),
        description="DEBUG=true logs every request and engine detail (sets the log level to DEBUG).",
    )
    log_level: LogLevel = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    _empty_is_unset = field_validator(
        "api_key", "admin_key", "audit_secret", "models_file", "audit_log", "preferred_engine", mode="before"
    )(_blank_to_none)

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [word.strip() for word in value.split(",") if word.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names_not_urls(cls, names: list[str]) -> list[str]:
        for name in names:
            if "/" in name:
                raise ValueError(f"{name!r} is a URL: give the host name alone, like jarvis.lan or *.home.arpa")
        return names

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # A browser's Origin is scheme://host[:port] without a path; "/" at the end would never match.
        origins = [origin.rstrip("/") for origin in origins]
        for origin in origins:
            if origin != "*" and "://" not in origin:
                raise ValueError(f"{origin!r} is not an origin: write it as scheme://host[:port], like http://ha.local:8123")
        return origins

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_cache_dir_is_default(cls, value: object) -> object:
        return default_cache_dir() if value in ("", None) else value

    @model_validator(mode="after")
    def _separate_keys(self) -> CoreSettings:
        keys = (self.admin_key, self.api_key)
        if None not in keys and keys[0].get_secret_value() == keys[1].get_secret_value():  # type: ignore[union-attr]
            raise ValueError("JARVIS_ADMIN_KEY must differ from JARVIS_API_KEY")
        return self

    def engine_defaults(self, kind: EngineKind) -> dict[str, object]:
        """The server-wide values of `kind`'s options (JARVIS_<prefix><OPTION>), unset ones left out."""
        values = {option.name: getattr(self, kind.setting_name(option)) for option in kind.options}
        return {name: value for name, value in values.items() if value is not None}

    @property
    def local_url(self) -> str:
        """Where a client on this machine reaches the server (a wildcard address means loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def reasoning_output(self) -> str | None:
        """The chat field thinking goes to, or None when it is dropped."""
        return None if self.reasoning_field == "none" else self.reasoning_field

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log or self.cache_dir / "audit.log"

    @property
    def effective_log_level(self) -> str:
        return "DEBUG" if self.debug else self.log_level

    def model_aliases(self) -> list[str]:
        return [alias.strip() for alias in self.model_alias.split(",") if alias.strip()]


def _engine_option_fields() -> dict[str, Any]:
    """One settings field per option of every engine kind, described by its declaration."""
    fields: dict[str, Any] = {}
    for kind in ENGINE_KINDS.values():
        for option in kind.options:
            field = Field(option.default, description=f"{kind.label}: {option.description}", **option.bounds())
            fields[kind.setting_name(option)] = (option.annotation, field)
    return fields


_OPTION_FIELDS = _engine_option_fields()
_OPTIONAL_OPTIONS = [name for name, (_, field) in _OPTION_FIELDS.items() if field.default is None]

Settings = create_model(
    "Settings",
    __base__=CoreSettings,
    __module__=__name__,
    __doc__="Every setting: the core ones and one per engine option.",
    __validators__={"_empty_option_is_unset": field_validator(*_OPTIONAL_OPTIONS, mode="before")(_blank_to_none)},
    **_OPTION_FIELDS,
)


class SettingsError(ValueError):
    """Settings could not be loaded; the message is one line naming the variable."""


def env_name(field_name: str) -> str:
    field = Settings.model_fields[field_name]
    if isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return f"JARVIS_{field_name.upper()}"


def load_settings(*, check_registry: bool = True, **overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one line per bad variable. With
    `check_registry`, the model registry they name is read too, so a bad models.yaml entry stops
    the start with one line naming the entry and the field (RegistryError is a SettingsError)."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            if not problem["loc"]:  # a check across fields: its message names the variables
                lines.append(problem["msg"].removeprefix("Value error, "))
                continue
            field_name = str(problem["loc"][0])
            name = env_name(field_name) if field_name in Settings.model_fields else field_name
            lines.append(f"{name}={problem.get('input')!r} is invalid: {problem['msg']}")
        raise SettingsError("; ".join(lines)) from None
    if check_registry:
        from service.model_registry import load_registry  # late: that module builds on this one

        load_registry(settings)
    return settings


def render_env_example() -> str:
    """The `.env.example` text: every variable, its description and its default."""
    lines = ["# Jarvis LLM Proxy settings. Copy to .env and edit; the environment overrides .env.", ""]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=False)
        if default is None or default == [] or field.default_factory is not None:
            shown = ""
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = default
        lines.append(f"# {field.description}")
        lines.append(f"{env_name(name)}={shown}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_env_example())
