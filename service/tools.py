"""From a request's tools, tool_choice and response_format to a plan: which tools the template
renders, which parser reads the answer, and which JSON schema (if any) constrains decoding.
Implemented once here for every engine and chat format."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from chat_formats import ChatFormat
from chat_formats.registry import ToolSupport
from chat_formats.tool_parsers import TOOL_PARSERS, ToolCallParser
from service.errors import InvalidRequestError
from service.protocol import ChatCompletionRequest, FunctionDefinition

logger = logging.getLogger(__name__)


NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

REACT_INSTRUCTIONS = (
    "You can use these tools:\n{tools}\n\n"
    "To use a tool, answer with exactly two lines and nothing else:\n"
    "Action: <tool name>\nAction Input: <the arguments as a JSON object>\n"
    "You will then get an Observation with the result. Otherwise answer the user directly."
)


@dataclass(frozen=True)
class ToolPlan:
    # Canonical tool definitions for the template (sorted, stable JSON); None renders no tools.
    template_tools: list[dict[str, Any]] | None = None
    parser: ToolCallParser | None = None  # None: the answer is text only
    forced: bool = False  # the whole answer is one call, constrained by `constraint`
    constraint: dict[str, Any] | None = None  # JSON schema for the whole answer
    react: bool = False
    react_tools: list[dict[str, Any]] | None = None


def plan_tools(request: ChatCompletionRequest, chat_format: ChatFormat, tool_support: ToolSupport) -> ToolPlan:
    functions = _functions(request)
    choice = _tool_choice(request, functions)
    response_schema = _response_schema(request)
    if not functions or choice == "none":
        return ToolPlan(constraint=response_schema)
    if tool_support == "none":
        if choice != "auto":
            raise InvalidRequestError(
                "this model is configured without tool support (tool_support none), so tool_choice "
                f"{choice!r} cannot be honoured; send tool_choice auto or none",
                param="tool_choice",
            )
        logger.warning("tools dropped: the model is configured with tool_support none")
        return ToolPlan(constraint=response_schema)
    canonical = sorted((_canonical(function) for function in functions), key=lambda tool: tool["function"]["name"])
    forced_names = [tool["function"]["name"] for tool in canonical] if choice == "required" else None
    if isinstance(choice, dict):
        forced_names = [choice["name"]]
    if forced_names is not None and response_schema is not None:
        raise InvalidRequestError(
            "response_format cannot be combined with a forced tool_choice: the answer is a tool call",
            param="response_format",
        )
    react = tool_support == "react"
    template_tools = None if react else canonical
    react_tools = canonical if react else None
    if forced_names is not None:
        tools_by_name = {tool["function"]["name"]: tool for tool in canonical}
        constraint = _forced_call_schema([tools_by_name[name] for name in forced_names])
        return ToolPlan(template_tools, TOOL_PARSERS["json"], True, constraint, react, react_tools)
    parser = TOOL_PARSERS["react"] if react else TOOL_PARSERS[chat_format.tool_parser]
    return ToolPlan(template_tools, parser, False, response_schema, react, react_tools)


# ---- tools ------------------------------------------------------------------------------------


def _functions(request: ChatCompletionRequest) -> list[FunctionDefinition]:
    functions = [tool.function for tool in request.tools or []] + list(request.functions or [])
    for index, function in enumerate(functions):
        _check_parameters(function, f"tools.{index}.function.parameters")
    return functions


def _check_parameters(function: FunctionDefinition, param: str) -> None:
    parameters = function.parameters
    if parameters is None or parameters == {}:
        return
    if parameters.get("type", "object") != "object":
        raise InvalidRequestError(
            f"the parameters of tool {function.name!r} must be a JSON Schema of type 'object', "
            f"not {parameters.get('type')!r}",
            param=param,
        )
    _check_schema(parameters, param, f"the parameters of tool {function.name!r}")


def _tool_choice(request: ChatCompletionRequest, functions: list[FunctionDefinition]) -> str | dict[str, str]:
    choice: object = request.tool_choice
    if choice is None and request.function_call is not None:
        choice = request.function_call
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    name = _named_choice(choice)
    if name not in {function.name for function in functions}:
        known = ", ".join(sorted(function.name for function in functions)) or "none"
        raise InvalidRequestError(
            f"tool_choice names the function {name!r}, which is not among the tools ({known})",
            param="tool_choice",
        )
    return {"name": name}


def _named_choice(choice: object) -> str:
    data = choice.model_dump() if hasattr(choice, "model_dump") else choice
    if isinstance(data, dict):
        function = data.get("function") if isinstance(data.get("function"), dict) else data
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
    raise InvalidRequestError("tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")


def _canonical(function: FunctionDefinition) -> dict[str, Any]:
    """Stable content and key order, so the same tools always render the same prompt."""
    definition: dict[str, Any] = {"name": function.name, "parameters": function.parameters or NO_PARAMETERS}
    if function.description:
        definition["description"] = function.description
    return json.loads(json.dumps({"type": "function", "function": definition}, sort_keys=True))


def _forced_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    options = []
    for tool in tools:
        arguments = copy.deepcopy(tool["function"]["parameters"])
        arguments.setdefault("type", "object")
        arguments.setdefault("properties", {})
        arguments.setdefault("additionalProperties", False)  # arguments that validate, "{}" for none
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool["function"]["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


# ---- response_format -------------------------------------------------------------------------


def _response_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise InvalidRequestError(
            "response_format type json_schema needs json_schema.schema", param="response_format.json_schema"
        )
    _check_schema(spec.schema_, "response_format.json_schema.schema", "response_format.json_schema.schema")
    return _closed(spec.schema_) if spec.strict else spec.schema_


def _check_schema(schema: dict[str, Any], param: str, what: str) -> None:
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        raise InvalidRequestError(f"{what} is not a valid JSON Schema: {error.message}", param=param) from None


def _closed(schema: Any) -> Any:
    """Strict mode: objects accept only the properties they declare, as OpenAI's strict does."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if closed.get("type") == "object" or "properties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


# ---- ReAct ------------------------------------------------------------------------------------


def react_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite a conversation for the ReAct text protocol: instructions in the system message,
    earlier calls as Action lines, tool results as Observations."""
    listing = "\n".join(
        f"- {tool['function']['name']}: {tool['function'].get('description', '')} "
        f"Arguments schema: {json.dumps(tool['function']['parameters'], sort_keys=True)}"
        for tool in tools
    )
    instructions = REACT_INSTRUCTIONS.format(tools=listing)
    rewritten: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            lines = [message["content"]] if message["content"] else []
            for call in message["tool_calls"]:
                function = call.get("function", {})
                lines.append(f"Action: {function.get('name')}\nAction Input: {json.dumps(function.get('arguments', {}))}")
            rewritten.append({"role": "assistant", "content": "\n".join(lines)})
        elif message["role"] == "tool":
            rewritten.append({"role": "user", "content": f"Observation: {message['content']}"})
        else:
            rewritten.append({key: value for key, value in message.items() if key != "tool_calls"})
    if rewritten and rewritten[0]["role"] == "system":
        rewritten[0] = {**rewritten[0], "content": f"{rewritten[0]['content']}\n\n{instructions}"}
    else:
        rewritten.insert(0, {"role": "system", "content": instructions})
    return rewritten
