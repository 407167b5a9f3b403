"""Renders a conversation into prompt text with a chat format's Jinja2 template, in a sandbox."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chat_formats.registry import ChatFormat


class TemplateRenderError(ValueError):
    """The template rejected the conversation (for example a role it does not support)."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(template: str):  # type: ignore[no-untyped-def]
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.globals["raise_exception"] = _raise_exception
    environment.filters["tojson"] = _tojson
    return environment.from_string(template)


def prepare_template(chat_format: ChatFormat) -> None:
    """Compile the format's template now, so its first render does not pay for it."""
    _compile(chat_format.template)


def render_prompt(
    chat_format: ChatFormat,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    eos_token: str = "",
) -> str:
    """The prompt text for `messages`.

    BOS is the tokenizer's job, not the template's: templates get an empty `bos_token`, so the
    same text tokenizes to the same ids on every engine.
    """
    try:
        return _compile(chat_format.template).render(
            messages=list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token=eos_token,
        )
    except TemplateRenderError:
        raise
    except TemplateError as error:
        raise TemplateRenderError(f"chat format {chat_format.name!r} failed to render: {error}") from error
