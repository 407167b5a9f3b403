"""Pass-through to a chat-only upstream (flavour chat: a hosted API that takes only
/v1/chat/completions): the conversation as OpenAI chat messages, tools, tool choice and output
format, and its streamed chunks back as engine deltas with whole tool calls. The conversation is
the core's request (GenerationRequest.conversation), read by its fields."""

from __future__ import annotations

import json
from typing import Any

from backends.base import ConstraintError, Delta, EngineRefusedError, GenerationRequest

JSON = dict[str, Any]

# What a chat-only upstream's prompt is counted with here: it gives no token ids, so counts are
# estimates (EngineInfo) and its own usage figures replace them once the answer is in.
COUNTING_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if tools %}tools: {{ tools | tojson }}\n{% endif %}assistant:"
)
BYTES_PER_TOKEN = 4


def estimate_tokens(text: str) -> list[int]:
    """Stand-in token ids for text a chat-only upstream will tokenize itself: one per 4 bytes."""
    return [0] * -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def chat_body(request: GenerationRequest, model: str) -> JSON:
    conversation = request.conversation
    if conversation is None or not conversation.messages:
        raise EngineRefusedError("this model's upstream takes chat only: a raw prompt (completions) cannot be passed on; send messages")
    sampling = request.sampling
    body: JSON = {
        "model": model,
        "messages": [_message(message) for message in conversation.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(sampling, name):
            body[name] = getattr(sampling, name)
    if conversation.tools and conversation.tool_choice != "none":
        body["tools"] = [_tool(tool) for tool in conversation.tools]
        body["tool_choice"] = _tool_choice(conversation.tool_choice)
    output = conversation.output
    if output is not None:
        body["response_format"] = _response_format(output)
    if request.cache_key:
        body["user"] = request.cache_key
    return body


def _message(message: Any) -> JSON:
    wire: JSON = {"role": message.role, "content": message.content}
    if message.name:
        wire["name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json or json.dumps(call.arguments)}}
            for call in message.tool_calls
        ]
        wire["content"] = message.content or None
    if message.role == "tool":
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _tool(tool: Any) -> JSON:
    function: JSON = {"name": tool.name, "parameters": tool.parameters or {"type": "object", "properties": {}}}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> object:
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.name}}


def _response_format(output: Any) -> JSON:
    if output.kind == "json_object":
        return {"type": "json_object"}
    if output.kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": output.schema, "strict": bool(output.strict)}}
    raise ConstraintError("a chat-only upstream takes no GBNF grammar; send a JSON schema")


class ChatChunks:
    """Streamed chat chunks to deltas: text and reasoning as they come, tool calls joined by
    index and passed on whole with the finish."""

    def __init__(self) -> None:
        self.produced = 0
        self._calls: dict[int, JSON] = {}
        self._finish: str | None = None
        self._usage: JSON | None = None

    def feed(self, event: JSON) -> list[Delta]:
        if event.get("usage"):
            self._usage = event["usage"]
        deltas: list[Delta] = []
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                joined = self._calls.setdefault(int(call.get("index", len(self._calls))), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                joined["name"] += function.get("name") or ""
                joined["arguments"] += function.get("arguments") or ""
            if text or reasoning:
                self.produced += 1
                deltas.append(Delta(text, self.produced, reasoning=reasoning))
            self._finish = choice.get("finish_reason") or self._finish
        return deltas

    @property
    def started(self) -> bool:
        return self.produced > 0 or bool(self._calls) or self._finish is not None

    def last(self) -> Delta | None:
        """The finishing delta (with the calls and the usage), once the upstream said why it ended."""
        if self._finish is None:
            return None
        usage = self._usage or {}
        details = usage.get("prompt_tokens_details") or {}
        calls = tuple((call["name"], call["arguments"]) for _, call in sorted(self._calls.items()))
        return Delta(
            "",
            int(usage.get("completion_tokens") or self.produced),
            "length" if self._finish == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            calls=calls,
        )
