"""A Responses request to the core's input: `instructions` as the first system message, then the
previous response's conversation (for `previous_response_id`), then the new input items;
function tools, `tool_choice` and `text.format` mapped onto the core's tools and constraints."""

from __future__ import annotations

from core.generation import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from core.types import (
    GenerationInput,
    Message,
    NamedTool,
    OutputFormat,
    Sampling,
    Tool,
    ToolChoice,
    WireNames,
)
from protocols.responses.items import input_messages
from protocols.responses.schema import ResponsesRequest
from protocols.tolerance import log_unknown_fields
from service.errors import InvalidRequestError

NAMES = WireNames(
    messages="input",
    tools="tools",
    tool_parameters="tools.{index}.parameters",
    tool_choice="tool_choice",
    output="text.format",
    output_schema="text.format.schema",
    max_tokens="max_output_tokens",
)

# Request fields for state or services that live at OpenAI, refused rather than ignored: a client
# that sends them expects something this server cannot do.
HOSTED_ONLY = {
    "background": "background responses are not available here; send the request without background and wait for it",
    "conversation": "conversations are not stored here; send previous_response_id or the whole input instead",
    "prompt": "stored prompt templates are not available here; send the instructions and input themselves",
}


def conversation_of(request: ResponsesRequest, earlier: tuple[Message, ...] = ()) -> tuple[Message, ...]:
    """The conversation a request continues (`earlier`, the previous response's) and its input."""
    log_unknown_fields(request)
    for field_name, reason in HOSTED_ONLY.items():
        if getattr(request, field_name):
            raise InvalidRequestError(reason, param=field_name)
    return input_messages(request.input, earlier)


def responses_input(request: ResponsesRequest, conversation: tuple[Message, ...], cache_key: str | None = None) -> GenerationInput:
    """`conversation`: from `conversation_of`; `cache_key`: the previous response's prompt-cache key."""
    instructions = (Message("system", request.instructions),) if request.instructions else ()
    return GenerationInput(
        model=request.model,
        messages=(*instructions, *conversation),
        tools=_tools(request),
        tool_choice=_tool_choice(request),
        output=_output(request),
        sampling=Sampling(temperature=request.temperature, top_p=request.top_p),
        max_tokens=request.max_output_tokens,
        cache_key=request.user or request.prompt_cache_key or cache_key,
        names=NAMES,
    )


def _tools(request: ResponsesRequest) -> tuple[Tool, ...]:
    tools = []
    for index, spec in enumerate(request.tools or []):
        if spec.type != "function":
            raise InvalidRequestError(
                f"tools.{index} is a {spec.type!r} tool, which is not available here: this server runs "
                "function tools only (type function, with a name and JSON Schema parameters), which your code executes",
                param=f"tools.{index}.type",
            )
        if spec.name is None:
            raise InvalidRequestError(f"tools.{index} needs a name", param=f"tools.{index}.name")
        log_unknown_fields(spec)
        tools.append(Tool(spec.name, spec.description, spec.parameters))
    return tuple(tools)


def _tool_choice(request: ResponsesRequest) -> ToolChoice:
    choice = request.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice  # type: ignore[return-value]
    if choice.type == "function" and choice.name:
        return NamedTool(choice.name)
    raise InvalidRequestError(
        f'tool_choice of type {choice.type!r} is not available here; send none, auto, required or '
        '{"type": "function", "name": ...}',
        param="tool_choice",
    )


def _output(request: ResponsesRequest) -> OutputFormat | None:
    text_format = request.text.format if request.text else None
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return OutputFormat("json_object")
    return OutputFormat("json_schema", text_format.schema_, bool(text_format.strict))


def echo_fields(request: ResponsesRequest) -> dict[str, object]:
    """The request fields a response object repeats, with the values this server used."""
    text = request.text
    text_format = text.format.model_dump(by_alias=True, exclude_none=True) if text and text.format else {"type": "text"}
    choice = request.tool_choice
    reasoning = request.reasoning
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "prompt_cache_retention": request.prompt_cache_retention,
        "reasoning": {"effort": reasoning.effort if reasoning else None, "summary": reasoning.summary if reasoning else None},
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",
        "store": request.store,
        "temperature": DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
        "text": {"format": text_format, "verbosity": (text.verbosity if text else None) or "medium"},
        "tool_choice": choice.model_dump(exclude_none=True) if choice is not None and not isinstance(choice, str) else choice or "auto",
        "tools": [
            {
                "type": "function",
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.parameters,
                "strict": True if spec.strict is None else spec.strict,  # the Responses API's default
            }
            for spec in request.tools or []
        ],
        "top_logprobs": 0,
        "top_p": DEFAULT_TOP_P if request.top_p is None else request.top_p,
        "truncation": request.truncation or "disabled",
        "user": request.user,
    }
