"""Real tier: tool calling and structured output with the packaged model, through the openai
client against a live server, on every engine."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

from tests.test_tools_api import HOME_TOOLS

pytestmark = pytest.mark.real

SYSTEM = "You are a voice assistant for a smart home. Use the tools to act."
ASK = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Turn on the kitchen light."}]
SCHEMAS = {tool["function"]["name"]: tool["function"].get("parameters", {"type": "object", "properties": {}}) for tool in HOME_TOOLS}


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.api_url, api_key="x", max_retries=0, timeout=300)


def assert_valid_call(name: str, arguments: str) -> dict:
    assert name in SCHEMAS
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, {**SCHEMAS[name], "additionalProperties": False})
    return parsed


def test_required_gives_a_valid_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="x", messages=ASK, tools=HOME_TOOLS, tool_choice="required", max_tokens=48, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_valid_call(call.function.name, call.function.arguments)


def test_required_streamed_gives_a_valid_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="x", messages=ASK, tools=HOME_TOOLS, tool_choice="required", max_tokens=48, temperature=0, stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    calls = [chunk.choices[0].delta.tool_calls for chunk in chunks if chunk.choices[0].delta.tool_calls]
    assert len(calls) == 1 and calls[0][0].index == 0 and calls[0][0].id
    assert_valid_call(calls[0][0].function.name, calls[0][0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(chunk.choices[0].delta.content for chunk in chunks)


def test_named_tool_without_parameters_gives_empty_arguments(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="x", messages=ASK, tools=HOME_TOOLS, max_tokens=32, temperature=0,
        tool_choice={"type": "function", "function": {"name": "GetLiveContext"}},
    )
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "GetLiveContext"
    assert call.function.arguments == "{}"


def test_two_round_trips_call_then_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="x", messages=ASK, tools=HOME_TOOLS, tool_choice="required", max_tokens=48, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    follow_up = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"success": True})},
    ]
    second = client.chat.completions.create(model="x", messages=follow_up, tools=HOME_TOOLS, max_tokens=16, temperature=0)
    choice = second.choices[0]
    assert choice.finish_reason in {"stop", "length", "tool_calls"}
    assert choice.message.content or choice.message.tool_calls
    # the second round trip reuses the first one's prompt
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"room": {"type": "string", "maxLength": 20}, "lights_on": {"type": "boolean"}},
        "required": ["room", "lights_on"],
        "additionalProperties": False,
    }
    response = client.chat.completions.create(
        model="x", max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "Describe the kitchen as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "room", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), schema)


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    # Two examples set the shape, as a voice pipeline's prompt would; the base model follows them.
    messages = [
        {"role": "user", "content": "Kitchen: light on, oven off."},
        {"role": "assistant", "content": '{"light": "on", "oven": "off"}'},
        {"role": "user", "content": "Bedroom: light off, fan on."},
        {"role": "assistant", "content": '{"light": "off", "fan": "on"}'},
        {"role": "user", "content": "Garage: door open, light off."},
    ]
    response = client.chat.completions.create(model="x", max_tokens=48, temperature=0, response_format={"type": "json_object"}, messages=messages)
    content = response.choices[0].message.content
    assert not re.search(r"\s{6,}", content), f"the grammar let the model pad with whitespace: {content!r}"
    assert response.choices[0].finish_reason == "stop", content
    assert isinstance(json.loads(content), dict)


def test_setup_probe_returns_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="x", messages=ASK, tools=HOME_TOOLS, max_tokens=3)
    assert response.choices[0].finish_reason == "length"


def test_auto_streamed_with_tools_completes(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="x", messages=ASK, tools=HOME_TOOLS, max_tokens=24, temperature=0, stream=True)
    chunks = [chunk for chunk in stream if chunk.choices]
    assert chunks[-1].choices[0].finish_reason in {"stop", "length", "tool_calls"}
