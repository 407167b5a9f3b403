"""Ollama /api/generate: a prompt (with `system`, through the model's chat format; `raw` as is; or
through a `template` of Ollama's own) to the core's input, and the core's events to `response`
lines. Ollama's prompt templates are Go templates; the subset legacy /api/generate templates use
is rendered here: {{ .System }}, {{ .Prompt }}, {{ .Response }} (the prompt ends there) and
{{ if .X }} ... {{ else }} ... {{ end }}, with {{- -}} trimming."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from core.types import Completion, Finish, GenerationInput, Message, ReasoningDelta, TextDelta
from protocols.ollama.chat import output_of
from protocols.ollama.schema import GenerateRequest
from protocols.ollama.wire import OLLAMA_NAMES, LineRenderer, max_tokens_of, sampling_of, timestamp
from protocols.tolerance import log_unknown_fields
from service.errors import InvalidRequestError

JSON = dict[str, Any]

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_VARIABLES = {".System", ".Prompt", ".Response", ".Suffix"}


def generate_input(request: GenerateRequest, alias: str) -> GenerationInput:
    log_unknown_fields(request, request.options)
    if request.raw and (request.template or request.system or request.context):
        raise InvalidRequestError("raw mode does not support template, system, or context", param="raw")
    if request.context:
        raise InvalidRequestError(
            "context (deprecated) is not supported by this server: send the conversation as messages to /api/chat",
            param="context",
        )
    common: dict[str, Any] = {
        "model": alias,
        "output": output_of(request.format),
        "sampling": sampling_of(request.options),
        "max_tokens": max_tokens_of(request.options),
        "stop": tuple(request.options.stop_list()) if request.options else (),
        "names": OLLAMA_NAMES,
    }
    if request.raw:
        return GenerationInput(prompt=request.prompt, **common)
    if request.template:
        return GenerationInput(prompt=render_go_template(request.template, {".System": request.system or "", ".Prompt": request.prompt}), **common)
    messages = ([Message("system", request.system)] if request.system else []) + [Message("user", request.prompt)]
    return GenerationInput(messages=tuple(messages), **common)


def render_go_template(template: str, values: dict[str, str]) -> str:
    """The prompt a legacy Ollama template gives: its text up to {{ .Response }}."""
    output: list[str] = []
    branches: list[bool] = []  # per open {{ if }}: whether the branch being read is taken
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        taken = all(branches)
        if taken:
            output.append(text.rstrip() if match.group(1) else text)
        position = match.end()
        if match.group(3):
            while position < len(template) and template[position].isspace():
                position += 1
        action = match.group(2)
        words = action.split()
        if len(words) == 2 and words[0] == "if" and words[1] in _VARIABLES:
            branches.append(bool(values.get(words[1], "")))
        elif action == "else" and branches:
            branches[-1] = not branches[-1]
        elif action == "end" and branches:
            branches.pop()
        elif action == ".Response":
            if taken:
                return "".join(output)
        elif action in _VARIABLES:
            if taken:
                output.append(values.get(action, ""))
        else:
            raise InvalidRequestError(
                f"template uses {{{{ {action} }}}}, which this server does not render: it renders {{{{ .System }}}}, "
                "{{ .Prompt }}, {{ .Response }} and {{ if }} / {{ else }} / {{ end }} on them; send raw: true with a "
                "full prompt for anything else",
                param="template",
            )
    if branches:
        raise InvalidRequestError("template has an {{ if }} without its {{ end }}", param="template")
    output.append(template[position:])
    return "".join(output)


class GenerateRenderer(LineRenderer):
    """Shapes one generation as Ollama generate lines (`response`, and `thinking` when on)."""

    def line(self, response: str, **fields: Any) -> JSON:
        return {"model": self._model, "created_at": timestamp(), "response": response, "done": False, **fields}

    def whole(self, completion: Completion) -> JSON:
        thinking = {"thinking": completion.reasoning} if completion.reasoning and self._think else {}
        return self.line(completion.text, **thinking, **self._done(completion.finish))

    async def stream(self) -> AsyncIterator[JSON]:
        async for event in self._generation:
            if isinstance(event, TextDelta):
                yield self.line(event.text)
            elif isinstance(event, ReasoningDelta):
                if self._think:
                    yield self.line("", thinking=event.text)
            elif isinstance(event, Finish):
                yield self.line("", **self._done(event))
