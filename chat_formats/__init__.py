"""Chat formats shared by every engine: a registry of Jinja2 templates and a sandboxed renderer."""

from chat_formats.registry import AUTO, CHAT_FORMATS, ChatFormat, ChatFormatError, resolve_chat_format
from chat_formats.renderer import TemplateRenderError, render_prompt

__all__ = [
    "AUTO",
    "CHAT_FORMATS",
    "ChatFormat",
    "ChatFormatError",
    "TemplateRenderError",
    "render_prompt",
    "resolve_chat_format",
]
