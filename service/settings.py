"""Settings from the environment and `.env`. One field, one description: the description is the
`.env.example` comment and the `--help` text alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jarvis-llm-proxy"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JARVIS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    inference_engine: Literal["llama_cpp", "vllm"] = Field(
        "llama_cpp", description="Engine that runs the model in this process: llama_cpp or vllm."
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
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    context_size: int = Field(
        8192, ge=256, description="Context length in tokens (prompt + answer) per request."
    )
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for llama.cpp. Empty = all cores."
    )
    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers to offload to the GPU (llama_cpp); -1 = all, 0 = CPU only."
    )
    max_tokens: int = Field(
        512, ge=1, description="Answer length limit used when a request gives no max_tokens."
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, /v1 requests must send it as a Bearer token. Empty = no auth.",
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

    @field_validator("api_key", "n_threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_cache_dir_is_default(cls, value: object) -> object:
        return default_cache_dir() if value in ("", None) else value

    @property
    def effective_log_level(self) -> str:
        return "DEBUG" if self.debug else self.log_level

    def model_aliases(self) -> list[str]:
        return [alias.strip() for alias in self.model_alias.split(",") if alias.strip()]


class SettingsError(ValueError):
    """Settings could not be loaded; the message is one line naming the variable."""


def env_name(field_name: str) -> str:
    field = Settings.model_fields[field_name]
    if isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return f"JARVIS_{field_name.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field_name = str(problem["loc"][0]) if problem["loc"] else "?"
            name = env_name(field_name) if field_name in Settings.model_fields else field_name
            lines.append(f"{name}={problem.get('input')!r} is invalid: {problem['msg']}")
        raise SettingsError("; ".join(lines)) from None


def render_env_example() -> str:
    """The `.env.example` text: every variable, its description and its default."""
    lines = ["# Jarvis LLM Proxy settings. Copy to .env and edit; the environment overrides .env.", ""]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=False)
        if default is None or field.default_factory is not None:
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
