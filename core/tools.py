"""From a request's tools, tool choice and output format to a plan: which tools the template
renders, which parser reads the answer, and which constraint (if any) shapes decoding.
Implemented once here for every protocol, engine and chat format."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from typing import Any

from chat_formats import ChatFormat
from chat_formats.registry import ToolSupport
from chat_formats.tool_parsers import TOOL_PARSERS, ToolCallParser
from core.schemas import check_schema
from core.types import GenerationInput, NamedTool, OutputFormat, Tool
from service.errors import InvalidRequestError

logger = logging.getLogger(__name__)

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

# Bounds a forced call's arguments gets where its schema sets none, so that a small model cannot
# spend the whole max_tokens inside one string or array.
FORCED_STRING_MAX_LENGTH = 256
FORCED_ARRAY_MAX_ITEMS = 32

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
    constraint: OutputFormat | None = None  # shapes the whole answer
    react: bool = False
    react_tools: list[dict[str, Any]] | None = None


def plan_tools(request: GenerationInput, chat_format: ChatFormat, tool_support: ToolSupport) -> ToolPlan:
    names = request.names
    for index, tool in enumerate(request.tools):
        _check_parameters(tool, names.tool_parameters.format(index=index))
    output = _output_constraint(request)
    choice = request.tool_choice
    if isinstance(choice, NamedTool) and choice.name not in {tool.name for tool in request.tools}:
        known = ", ".join(sorted(tool.name for tool in request.tools)) or "none"
        raise InvalidRequestError(
            f"{names.tool_choice} names the function {choice.name!r}, which is not among the tools ({known})",
            param=names.tool_choice,
        )
    if not request.tools or choice == "none":
        return ToolPlan(constraint=output)
    if tool_support == "none":
        if choice != "auto":
            raise InvalidRequestError(
                "this model is configured without tool support (tool_support none), so a forced "
                f"{names.tool_choice} cannot be honoured; send auto or none",
                param=names.tool_choice,
            )
        logger.warning("tools dropped: the model is configured with tool_support none")
        return ToolPlan(constraint=output)
    canonical = sorted((_canonical(tool) for tool in request.tools), key=lambda tool: tool["function"]["name"])
    forced_names: list[str] | None = None
    if choice == "required":
        forced_names = [tool["function"]["name"] for tool in canonical]
    elif isinstance(choice, NamedTool):
        forced_names = [choice.name]
    if forced_names is not None and output is not None:
        raise InvalidRequestError(
            f"{names.output} cannot be combined with a forced {names.tool_choice}: the answer is a tool call",
            param=names.output,
        )
    react = tool_support == "react"
    template_tools = None if react else canonical
    react_tools = canonical if react else None
    if forced_names is not None:
        tools_by_name = {tool["function"]["name"]: tool for tool in canonical}
        schema = forced_call_schema([tools_by_name[name] for name in forced_names])
        return ToolPlan(template_tools, TOOL_PARSERS["json"], True, OutputFormat("json_schema", schema), react, react_tools)
    parser = TOOL_PARSERS["react"] if react else TOOL_PARSERS[chat_format.tool_parser]
    return ToolPlan(template_tools, parser, False, output, react, react_tools)


def _check_parameters(tool: Tool, param: str) -> None:
    parameters = tool.parameters
    if parameters is None or parameters == {}:
        return
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        kind = parameters.get("type") if isinstance(parameters, dict) else type(parameters).__name__
        raise InvalidRequestError(
            f"the parameters of tool {tool.name!r} must be a JSON Schema of type 'object', not {kind!r}", param=param
        )
    check_schema(parameters, param, f"the parameters of tool {tool.name!r}")


def _canonical(tool: Tool) -> dict[str, Any]:
    """Stable content and key order, so the same tools always render the same prompt."""
    definition: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or NO_PARAMETERS}
    if tool.description:
        definition["description"] = tool.description
    return json.loads(json.dumps({"type": "function", "function": definition}, sort_keys=True))


def forced_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    options = []
    for tool in tools:
        arguments = _bounded(copy.deepcopy(tool["function"]["parameters"]))
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


def _bounded(schema: Any) -> Any:
    """Give strings and arrays without an upper bound one (see FORCED_* above)."""
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: _bounded(value) for key, value in schema.items()}
    kinds = bounded.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and "enum" not in bounded and "const" not in bounded and "pattern" not in bounded:
        bounded.setdefault("maxLength", FORCED_STRING_MAX_LENGTH)
    if "array" in kinds:
        bounded.setdefault("maxItems", FORCED_ARRAY_MAX_ITEMS)
    return bounded


# ---- the output format -----------------------------------------------------------------------


def _output_constraint(request: GenerationInput) -> OutputFormat | None:
    output = request.output
    if output is None:
        return None
    if output.kind == "json_object":
        return OutputFormat("json_schema", {"type": "object"})
    if output.kind == "grammar":
        if not output.grammar or not output.grammar.strip():
            raise InvalidRequestError("the grammar is empty; send a GBNF grammar with a root rule", param=request.names.grammar)
        return output
    if output.schema is None:
        raise InvalidRequestError(f"{request.names.output} of type json_schema needs a schema", param=request.names.output)
    check_schema(output.schema, request.names.output_schema, request.names.output_schema)
    return OutputFormat("json_schema", _closed(output.schema) if output.strict else output.schema, output.strict)


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


def parse_arguments(arguments: object, param: str, name: str) -> dict[str, Any]:
    """A tool call's arguments from a client: a JSON object, or JSON text of one ("" = {})."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise InvalidRequestError(f"the arguments of the call to {name!r} are not valid JSON", param=param) from None
        except RecursionError:
            raise InvalidRequestError(f"the arguments of the call to {name!r} nest too deeply", param=param) from None
    if not isinstance(arguments, dict):
        raise InvalidRequestError(f"the arguments of the call to {name!r} must be a JSON object", param=param)
    return arguments
