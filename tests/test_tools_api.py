"""Fast tier: tools, tool_choice and response_format through the HTTP and facade layers."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.test_api import CHAT, assert_error, sse_events

HOME_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "HassTurnOn",
            "description": "Turns on a device or entity",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "area": {"type": "string"}, "domain": {"type": "string"}},
            },
        },
    },
    {"type": "function", "function": {"name": "GetLiveContext", "description": "Current state of the home"}},
]


def body(**fields: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "Turn on the kitchen light"}], "tools": HOME_TOOLS, **fields}


async def test_required_constrains_decoding_to_a_call_of_a_listed_tool(api, fake_engine) -> None:
    fake_engine.queue('{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}')
    data = (await api.post(CHAT, json=body(tool_choice="required"))).json()
    schema = fake_engine.requests[-1].sampling.constraint.schema
    assert {option["properties"]["name"]["const"] for option in schema["anyOf"]} == {"HassTurnOn", "GetLiveContext"}
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "HassTurnOn", "arguments": '{"name": "kitchen"}'}


async def test_named_tool_choice_constrains_to_that_tool(api, fake_engine) -> None:
    fake_engine.queue('{"name": "GetLiveContext", "arguments": {}}')
    choice = {"type": "function", "function": {"name": "GetLiveContext"}}
    data = (await api.post(CHAT, json=body(tool_choice=choice))).json()
    schema = fake_engine.requests[-1].sampling.constraint.schema
    assert schema["properties"]["name"] == {"const": "GetLiveContext"}
    assert schema["properties"]["arguments"]["additionalProperties"] is False
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


async def test_streamed_calls_go_one_per_chunk_then_finish(api, fake_engine) -> None:
    fake_engine.queue(*'[{"name": "HassTurnOn", "arguments": {"area": "kitchen"}}, {"name": "GetLiveContext", "arguments": {}}]')
    events = sse_events(await api.post(CHAT, json=body(stream=True)))
    chunks = [event for event in events[:-1] if event["choices"]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [delta["tool_calls"] for delta in deltas if "tool_calls" in delta]
    assert [len(call) for call in calls] == [1, 1]
    first, second = calls[0][0], calls[1][0]
    assert (first["index"], second["index"]) == (0, 1)
    assert first["id"] != second["id"]
    assert first["function"]["name"] == "HassTurnOn" and json.loads(first["function"]["arguments"]) == {"area": "kitchen"}
    assert second["function"]["arguments"] == "{}"
    assert not any(delta.get("content") for delta in deltas[1:]), "no content once a call starts"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert events[-1] == "[DONE]"


async def test_text_before_a_call_streams_as_content(app_factory, fake_engine) -> None:
    app = await app_factory(chat_format="chatml")
    fake_engine.queue("On it. ", "<tool", "_call>", '{"name": "GetLiveContext", "arguments": {}}', "</tool_call>")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        events = sse_events(await client.post(CHAT, json=body(stream=True)))
    deltas = [event["choices"][0]["delta"] for event in events[:-1] if event["choices"]]
    assert "".join(delta.get("content", "") for delta in deltas) == "On it. "
    assert deltas[-2]["tool_calls"][0]["function"]["name"] == "GetLiveContext"


async def test_auto_with_a_text_answer_is_just_text(api, fake_engine) -> None:
    fake_engine.queue("The light ", "is on.")
    data = (await api.post(CHAT, json=body())).json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "The light is on."}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert fake_engine.requests[-1].sampling.constraint is None
    assert '"name": "HassTurnOn"' in fake_engine.prompts[-1]


async def test_malformed_call_comes_back_as_text_not_an_error(api, fake_engine) -> None:
    fake_engine.queue('{"name": "HassTurnOn", "arguments": {"name": ')
    data = (await api.post(CHAT, json=body())).json()
    assert data["choices"][0]["message"]["content"] == '{"name": "HassTurnOn", "arguments": {"name": '
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_tool_choice_none_renders_no_tools_and_parses_nothing(api, fake_engine) -> None:
    fake_engine.queue('{"name": "GetLiveContext", "arguments": {}}')
    data = (await api.post(CHAT, json=body(tool_choice="none"))).json()
    assert "GetLiveContext" not in fake_engine.prompts[-1]
    assert data["choices"][0]["message"]["content"].startswith("{")


async def test_setup_probe_with_three_tokens_returns_length(api, fake_engine) -> None:
    fake_engine.queue("{", '"na', 'me"', ": ")
    data = (await api.post(CHAT, json=body(max_tokens=3))).json()
    assert data["choices"][0]["finish_reason"] == "length"


async def test_reordered_tools_render_the_same_prompt(api, fake_engine) -> None:
    await api.post(CHAT, json=body())
    await api.post(CHAT, json=body(tools=list(reversed(HOME_TOOLS))))
    assert fake_engine.prompts[-1] == fake_engine.prompts[-2]


async def test_tool_history_renders(api, fake_engine) -> None:
    messages = [
        {"role": "user", "content": "Turn on the kitchen light"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "HassTurnOn", "arguments": '{"name": "kitchen"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"success": true}'},
    ]
    assert (await api.post(CHAT, json=body(messages=messages))).status_code == 200
    prompt = fake_engine.prompts[-1]
    assert '<start_of_turn>model\n{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}<end_of_turn>' in prompt
    assert 'Tool result:\n{"success": true}' in prompt


async def test_react_tool_support(app_factory, fake_engine) -> None:
    app = await app_factory(tool_support="react")
    fake_engine.queue("Action: HassTurnOn\nAction Input: {\"area\": \"kitchen\"}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        data = (await client.post(CHAT, json=body())).json()
    assert "Action Input:" in fake_engine.prompts[-1]
    call = data["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": "HassTurnOn", "arguments": '{"area": "kitchen"}'}


async def test_tool_support_none_drops_tools_but_refuses_forced_calls(app_factory, fake_engine) -> None:
    app = await app_factory(tool_support="none")
    fake_engine.queue("Plain answer.")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        data = (await client.post(CHAT, json=body())).json()
        assert data["choices"][0]["message"]["content"] == "Plain answer."
        assert "HassTurnOn" not in fake_engine.prompts[-1]
        assert_error(await client.post(CHAT, json=body(tool_choice="required")), 400, param="tool_choice")


async def test_legacy_functions_are_tools(api, fake_engine) -> None:
    fake_engine.queue('{"name": "GetLiveContext", "arguments": {}}')
    functions = [tool["function"] for tool in HOME_TOOLS]
    data = (await api.post(CHAT, json=body(tools=None, functions=functions, function_call={"name": "GetLiveContext"}))).json()
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "GetLiveContext"


async def test_json_object_and_json_schema_constrain_decoding(api, fake_engine) -> None:
    await api.post(CHAT, json=body(tools=None, response_format={"type": "json_object"}))
    assert fake_engine.requests[-1].sampling.constraint.schema == {"type": "object"}
    schema = {"type": "object", "properties": {"room": {"type": "string"}, "size": {"type": "object", "properties": {"m2": {"type": "number"}}}}}
    await api.post(CHAT, json=body(tools=None, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}))
    assert fake_engine.requests[-1].sampling.constraint.schema == schema
    strict = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}}
    await api.post(CHAT, json=body(tools=None, response_format=strict))
    closed = fake_engine.requests[-1].sampling.constraint.schema
    assert closed["additionalProperties"] is False
    assert closed["properties"]["size"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "OpenDoor"}}}, "tool_choice", "OpenDoor"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}]}, "tools.0.function.parameters", "type 'object'"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "properties": 5}}}]}, "tools.0.function.parameters", "not a valid JSON Schema"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages.0.tool_call_id", "tool_call_id"),
        ({"tools": None, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}}, "response_format.json_schema.schema", "not a valid JSON Schema"),
        ({"tools": None, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema", "needs json_schema.schema"),
        ({"response_format": {"type": "json_object"}, "tool_choice": "required"}, "response_format", "cannot be combined"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name", ""),
    ],
)
async def test_bad_tool_input_gets_400(api, fields, param, says) -> None:
    assert_error(await api.post(CHAT, json=body(**fields)), 400, param=param, says=says)


async def test_tools_with_no_or_only_optional_parameters_are_valid(api, fake_engine) -> None:
    tools = [
        {"type": "function", "function": {"name": "a"}},
        {"type": "function", "function": {"name": "b", "parameters": {}}},
        {"type": "function", "function": {"name": "c", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
    ]
    assert (await api.post(CHAT, json=body(tools=tools, tool_choice="required"))).status_code == 200


async def test_engine_without_grammar_refuses_constrained_output(app_factory, fake_engine) -> None:
    import dataclasses

    from backends.base import EngineCapabilities

    fake_engine._info = dataclasses.replace(fake_engine._info, capabilities=EngineCapabilities(grammar=False))
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.post(CHAT, json=body(tool_choice="required")), 400, says="cannot constrain")
