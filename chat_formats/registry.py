"""Chat formats by name. A format is a Jinja2 template plus the stop strings that end a turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chat_formats.tool_parsers import parser_for_template

ToolSupport = Literal["native", "react", "none"]

_TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ChatFormat:
    name: str
    template: str
    # Text that ends the assistant's turn, for models whose end-of-turn marker is not an
    # end-of-generation token in the vocabulary.
    stop: tuple[str, ...] = ()
    # Model architectures (GGUF general.architecture / HF model_type) this format is the default for.
    architectures: tuple[str, ...] = field(default=(), compare=False)
    # How tools reach the model: rendered by the template (native), the ReAct text protocol
    # (react), or not at all (none); and the parser (chat_formats.tool_parsers) for its calls.
    tool_support: ToolSupport = "native"
    tool_parser: str = "json"
    # Markers around a model's thinking (start, end): that text is reasoning, never content.
    reasoning: tuple[str, str] | None = None


THINK_MARKERS = ("<think>", "</think>")


def _builtin(
    name: str, stop: tuple[str, ...], architectures: tuple[str, ...], tool_parser: str, reasoning: tuple[str, str] | None = None
) -> ChatFormat:
    template = (_TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8")
    return ChatFormat(name, template, stop, architectures, "native", tool_parser, reasoning)


CHAT_FORMATS: dict[str, ChatFormat] = {
    chat_format.name: chat_format
    for chat_format in (
        _builtin("chatml", ("<|im_end|>",), ("qwen2", "qwen3", "qwen2moe", "qwen3moe", "qwen2_moe", "qwen3_moe", "phi3"), "hermes", THINK_MARKERS),
        _builtin("llama3", ("<|eot_id|>", "<|eom_id|>"), ("llama",), "llama3"),
        _builtin("mistral", ("</s>",), ("mistral", "mistral3"), "mistral"),
        _builtin("gemma", ("<end_of_turn>",), ("gemma", "gemma2", "gemma3", "gemma3_text"), "json"),
    )
}

AUTO = "auto"


def _from_template(name: str, template: str) -> ChatFormat:
    """A format from a template we did not write: native tools when it renders them."""
    tool_support: ToolSupport = "native" if "tools" in template else "react"
    reasoning = THINK_MARKERS if THINK_MARKERS[0] in template else None
    return ChatFormat(name, template, tool_support=tool_support, tool_parser=parser_for_template(template), reasoning=reasoning)


class ChatFormatError(ValueError):
    """The configured chat format cannot be used; the message says what to set instead."""


def resolve_chat_format(setting: str, architecture: str, embedded_template: str | None) -> ChatFormat:
    """Pick the chat format for JARVIS_CHAT_FORMAT=`setting` and the loaded model.

    `auto` prefers the template embedded in the model, then the format registered for the
    model's architecture. Anything else must be a registered name or a template file path.
    """
    if setting == AUTO:
        if embedded_template:
            return _from_template("embedded", embedded_template)
        for chat_format in CHAT_FORMATS.values():
            if architecture in chat_format.architectures:
                return chat_format
        raise ChatFormatError(
            f"the model has no embedded chat template and architecture {architecture!r} has no "
            f"default format; set JARVIS_CHAT_FORMAT to one of {sorted(CHAT_FORMATS)} or a template file"
        )
    if setting in CHAT_FORMATS:
        return CHAT_FORMATS[setting]
    path = Path(setting).expanduser()
    if path.is_file():
        return _from_template(f"custom:{path.name}", path.read_text(encoding="utf-8"))
    raise ChatFormatError(
        f"JARVIS_CHAT_FORMAT={setting!r} is neither a known format ({', '.join(sorted(CHAT_FORMATS))}, "
        f"auto) nor an existing template file"
    )
