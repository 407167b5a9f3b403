"""From messages to prompt token ids: the chat template renders the conversation, and text that
came from messages is tokenized as text. Special tokens (turn markers and the like) come only
from the template's own markup: a user who writes `<end_of_turn><start_of_turn>model` in a message
gets those characters as text, not real turn tokens.

Where no message contains the text of a special token, the prompt is tokenized in one piece,
exactly as before. Where one does, that text is swapped for a private-use placeholder before
rendering, and the rendered prompt is tokenized in segments: template text with special tokens
parsed, the swapped text without."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from chat_formats.registry import ChatFormat
from chat_formats.renderer import prepare_template
from core.types import Message

if TYPE_CHECKING:
    from service.managed_model import ManagedModel

# Private-use code points (plane 15) stand in for special-token text while the template renders.
_PLACEHOLDER_BASE = 0xF0000
_PLACEHOLDER_LIMIT = 0xFFFFD
_PLACEHOLDERS = re.compile(f"[{chr(_PLACEHOLDER_BASE)}-{chr(_PLACEHOLDER_LIMIT)}]")

Tokenize = Callable[..., list[int]]  # (text, *, special: bool, add_bos: bool) -> ids


@lru_cache(maxsize=8)
def special_token_pattern(special_tokens: frozenset[str]) -> re.Pattern[str] | None:
    """One regex matching any special token's text, built as a trie so that a search costs about
    the same whether the vocabulary has ten special tokens or ten thousand."""
    tokens = [token for token in special_tokens if token]
    if not tokens:
        return None
    trie: dict[str, Any] = {}
    for token in tokens:
        node = trie
        for char in token:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a token
    return re.compile(_trie_regex(trie))


def _trie_regex(node: dict[str, Any]) -> str:
    ends = "" in node
    branches = [re.escape(char) + _trie_regex(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Where a token ends here and longer ones continue it, prefer the longer, allow the shorter.
    return f"(?:{body})?" if ends else body


@dataclass
class SpecialTextGuard:
    """Swaps special-token text in message fields for placeholders, and back when tokenizing."""

    pattern: re.Pattern[str] | None
    originals: list[str]

    def protect(self, text: str) -> str:
        if self.pattern is None or not text or self.pattern.search(text) is None:
            return text
        return self.pattern.sub(self._placeholder, text)

    def _placeholder(self, match: re.Match[str]) -> str:
        index = len(self.originals)
        if _PLACEHOLDER_BASE + index > _PLACEHOLDER_LIMIT:
            return "\N{REPLACEMENT CHARACTER}"
        self.originals.append(match.group(0))
        return chr(_PLACEHOLDER_BASE + index)

    def tokenize(self, prompt: str, tokenize: Tokenize) -> list[int]:
        if not self.originals:
            return tokenize(prompt, special=True, add_bos=True)
        ids: list[int] = []
        position = 0
        for match in _PLACEHOLDERS.finditer(prompt):
            index = ord(match.group(0)) - _PLACEHOLDER_BASE
            if index >= len(self.originals):
                continue  # a private-use character the client sent itself: plain text
            ids += tokenize(prompt[position : match.start()], special=True, add_bos=not ids and position == 0)
            ids += tokenize(self.originals[index], special=False, add_bos=False)
            position = match.end()
        ids += tokenize(prompt[position:], special=True, add_bos=not ids)
        return ids

    def restore(self, prompt: str) -> str:
        """The prompt as the model reads it, for display (/tokenize)."""
        if not self.originals:
            return prompt

        def original(match: re.Match[str]) -> str:
            index = ord(match.group(0)) - _PLACEHOLDER_BASE
            return self.originals[index] if index < len(self.originals) else match.group(0)

        return _PLACEHOLDERS.sub(original, prompt)


async def prepare_rendering(model: ManagedModel) -> None:
    """A model's after-load step: compile its template and its special-token pattern (cached, for
    every request) now, so that the first command after a load or a restart does not pay for them
    (together about 0.1 s on this CPU for the packaged model)."""
    if model.chat_format is not None and model.info is not None:
        await asyncio.to_thread(_prepare, model.chat_format, model.info.special_tokens)


def _prepare(chat_format: ChatFormat, special_tokens: frozenset[str]) -> None:
    prepare_template(chat_format)
    special_token_pattern(special_tokens)


def guard_for(special_tokens: frozenset[str]) -> SpecialTextGuard:
    return SpecialTextGuard(special_token_pattern(special_tokens), [])


def protect(guard: SpecialTextGuard, value: Any) -> Any:
    """`value` (messages, tools: nested dicts, lists and strings) with special-token text in its
    strings swapped for placeholders."""
    if isinstance(value, str):
        return guard.protect(value)
    if isinstance(value, dict):
        return {key: protect(guard, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [protect(guard, item) for item in value]
    return value


def template_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages as templates expect them: text content, call arguments as objects, and tool
    results carrying the name of the call they answer."""
    call_names: dict[str, str] = {}
    rendered = []
    for message in messages:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.name is not None:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ]
            call_names.update({call.id: call.name for call in message.tool_calls if call.id})
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id
            entry.setdefault("name", call_names.get(message.tool_call_id or "", ""))
        rendered.append(entry)
    return rendered
