"""Fast tier: Anthropic's Messages API over the fake engine: shapes (checked against the
`anthropic` SDK's own types), stream event order, conversion of blocks, and errors."""

from __future__ import annotations

import json
import logging

import anthropic.types
import httpx
import pydantic
import pytest

from backends.base import EngineError, EngineOverloadedError
from core.types import Usage
from protocols.anthropic.convert import message_input
from protocols.anthropic.errors import error_type
from protocols.anthropic.render import MessageRenderer, accumulate, usage_body
from protocols.anthropic.schema import MessagesRequest

MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
STREAM_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def body(**fields: object) -> dict[str, object]:
    return {"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.fixture
async def chatml_api(app_factory):
    """A chat format with thinking markers and <tool_call> syntax, for reasoning and calls in text."""
    app = await app_factory(chat_format="chatml")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


def named_events(response: httpx.Response) -> list[dict]:
    """Parse an Anthropic stream strictly: each event is an `event:` line naming the payload's type,
    then one `data:` line; nothing else."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        payload = json.loads(data_line[len("data: ") :])
        assert payload["type"] == name_line[len("event: ") :]
        events.append(payload)
    return events


def assert_well_formed(events: list[dict]) -> None:
    """The order Anthropic's streams follow and its SDKs rely on."""
    for event in events:
        if event["type"] != "error":
            STREAM_EVENT.validate_python(event)  # each event has the SDK's shape
    assert events[0]["type"] == "message_start"
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert events[-1] == {"type": "message_stop"}
    assert [event["type"] for event in events].count("message_delta") == 1
    assert events[-2]["type"] == "message_delta"
    open_index: int | None = None
    next_index = 0
    tool_use_started = False
    for event in events[1:-2]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            assert event["index"] == next_index, "indexes count up from 0"
            block_type = event["content_block"]["type"]
            assert not (tool_use_started and block_type == "text"), "text after a tool_use block"
            tool_use_started |= block_type == "tool_use"
            open_index, next_index = event["index"], next_index + 1
        elif kind == "content_block_delta":
            assert event["index"] == open_index
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event {kind} between message_start and message_delta")
    assert open_index is None, "a block was never stopped"


def assert_error(response: httpx.Response, status: int, error_type: str, *names: str) -> str:
    """Anthropic's error body; the message names each of `names` (the body has no param field)."""
    assert response.status_code == status, response.text
    data = response.json()
    assert set(data) == {"type", "error"} and data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == error_type
    for name in names:
        assert name.lower() in data["error"]["message"].lower(), data["error"]["message"]
    return data["error"]["message"]


# ---- whole messages --------------------------------------------------------------------------


async def test_whole_message_has_anthropics_shape(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    response = await api.post(MESSAGES, json=body(system="You are terse."))
    assert response.status_code == 200, response.text
    data = response.json()
    anthropic.types.Message.model_validate(data)
    assert data["id"].startswith("msg_")
    assert (data["type"], data["role"], data["model"]) == ("message", "assistant", "fake-model")
    assert data["content"] == [{"type": "text", "text": "Hello"}]
    assert (data["stop_reason"], data["stop_sequence"]) == ("end_turn", None)
    prompt_tokens = len(fake_engine.requests[-1].prompt_token_ids)
    assert data["usage"] == {"input_tokens": prompt_tokens, "output_tokens": 2, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    prompt = fake_engine.prompts[-1]
    assert prompt.index("You are terse.") < prompt.index("hi")


def test_usage_splits_input_into_cached_and_the_rest() -> None:
    assert usage_body(Usage(prompt_tokens=100, completion_tokens=5, cached_tokens=60)) == {
        "input_tokens": 40, "output_tokens": 5, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 0,
    }


async def test_system_as_text_blocks_and_content_as_blocks(api, fake_engine) -> None:
    request = body(
        system=[{"type": "text", "text": "Rule one.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Rule two."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}]}],
    )
    assert (await api.post(MESSAGES, json=request)).status_code == 200
    assert "Rule one.\n\nRule two." in fake_engine.prompts[-1]
    assert "First part.\n\nSecond part." in fake_engine.prompts[-1]


async def test_stop_sequence_ends_the_text_and_is_reported(api, fake_engine) -> None:
    fake_engine.queue("one, ", "two", ", thr", "ee")
    data = (await api.post(MESSAGES, json=body(stop_sequences=["END", ", th"]))).json()
    assert data["content"] == [{"type": "text", "text": "one, two"}]
    assert (data["stop_reason"], data["stop_sequence"]) == ("stop_sequence", ", th")


async def test_max_tokens_gives_stop_reason_max_tokens(api, fake_engine) -> None:
    fake_engine.queue("a", "b", "c", "d")
    data = (await api.post(MESSAGES, json=body(max_tokens=2))).json()
    assert (data["stop_reason"], data["usage"]["output_tokens"]) == ("max_tokens", 2)


async def test_an_empty_answer_has_no_content_blocks(api, fake_engine) -> None:
    fake_engine.queue("")
    data = (await api.post(MESSAGES, json=body())).json()
    assert data["content"] == [] and data["stop_reason"] == "end_turn"


async def test_fields_reach_the_core(api, fake_engine, caplog) -> None:
    caplog.set_level(logging.INFO, logger="protocols")
    request = body(
        temperature=0.2, top_p=0.9, top_k=7, metadata={"user_id": "kitchen"}, thinking={"type": "enabled", "budget_tokens": 1024},
        service_tier="auto", container="c1", mystery_option={"a": 1},
    )
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "some-feature-2025-01-01"}
    assert (await api.post(MESSAGES, json=request, headers=headers)).status_code == 200
    sent = fake_engine.requests[-1]
    assert (sent.sampling.temperature, sent.sampling.top_p, sent.sampling.top_k) == (0.2, 0.9, 7)
    assert sent.sampling.max_tokens == 32
    assert sent.cache_key == "kitchen"
    assert "container, mystery_option" in caplog.text


# ---- tools -------------------------------------------------------------------------------------


async def test_tool_choice_any_forces_a_call_and_returns_a_tool_use_block(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    data = (await api.post(MESSAGES, json=body(tools=[WEATHER, CLOCK], tool_choice={"type": "any"}))).json()
    anthropic.types.Message.model_validate(data)
    schema = fake_engine.requests[-1].sampling.constraint.schema
    assert {option["properties"]["name"]["const"] for option in schema["anyOf"]} == {"get_weather", "get_time"}
    (block,) = data["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Oslo"})
    assert data["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, None), ({"type": "none"}, None), ({"type": "tool", "name": "get_time"}, "get_time")],
)
async def test_tool_choice_kinds(api, fake_engine, choice, expected) -> None:
    await api.post(MESSAGES, json=body(tools=[WEATHER, CLOCK], tool_choice=choice))
    constraint = fake_engine.requests[-1].sampling.constraint
    assert (constraint.schema["properties"]["name"]["const"] if constraint else None) == expected
    assert ("get_weather" in fake_engine.prompts[-1]) == (choice["type"] != "none")


async def test_disable_parallel_tool_use_keeps_the_first_call(api, fake_engine) -> None:
    fake_engine.queue('[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]')
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    data = (await api.post(MESSAGES, json=body(tools=[WEATHER, CLOCK], tool_choice=choice))).json()
    assert [block["name"] for block in data["content"]] == ["get_time"]
    assert data["content"][0]["input"] == {} and data["stop_reason"] == "tool_use"
    fake_engine.queue('[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]')
    data = (await api.post(MESSAGES, json=body(tools=[WEATHER, CLOCK]))).json()
    assert [block["name"] for block in data["content"]] == ["get_time", "get_weather"]


async def test_tool_history_renders_calls_results_and_errors(api, fake_engine) -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I need two tools.", "signature": "abc"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny, 21 C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "clock offline", "is_error": True},
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]
    assert (await api.post(MESSAGES, json=body(messages=messages, tools=[WEATHER, CLOCK]))).status_code == 200
    prompt = fake_engine.prompts[-1]
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    order = [prompt.index(text) for text in ("Checking.", "Sunny, 21 C", "Error: clock offline", "Summarise.")]
    assert order == sorted(order)


async def test_output_config_format_constrains_the_answer(api, fake_engine) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fake_engine.queue('{"ok": true}')
    data = (await api.post(MESSAGES, json=body(output_config={"format": {"type": "json_schema", "schema": schema}}))).json()
    assert json.loads(data["content"][0]["text"]) == {"ok": True}
    constraint = fake_engine.requests[-1].sampling.constraint
    assert constraint.schema["properties"] == schema["properties"] and constraint.schema["additionalProperties"] is False


# ---- streams -------------------------------------------------------------------------------------


async def test_stream_of_text_follows_anthropics_event_order(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo", "!")
    events = named_events(await api.post(MESSAGES, json=body(stream=True)))
    assert_well_formed(events)
    assert [event["type"] for event in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(event["delta"]["text"] for event in events if event["type"] == "content_block_delta") == "Hello!"
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == 3
    assert events[0]["message"]["usage"]["input_tokens"] == len(fake_engine.requests[-1].prompt_token_ids)


async def test_stream_of_thinking_text_and_tool_use_adds_up_to_the_whole_message(chatml_api, fake_engine) -> None:
    script = ("<think>", "Need ", "weather.", "</think>", "Let me ", "check.", "<tool_call>", '{"name": "get_weather", "arguments": {"city": "Oslo"}}', "</tool_call>")
    request = body(tools=[WEATHER])
    fake_engine.queue(*script)
    events = named_events(await chatml_api.post(MESSAGES, json={**request, "stream": True}))
    assert_well_formed(events)
    starts = [event["content_block"] for event in events if event["type"] == "content_block_start"]
    assert [block["type"] for block in starts] == ["thinking", "text", "tool_use"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    assert starts[2]["input"] == {} and starts[2]["name"] == "get_weather"
    tool_deltas = [event["delta"] for event in events if event.get("index") == 2 and event["type"] == "content_block_delta"]
    assert [delta["type"] for delta in tool_deltas] == ["input_json_delta"]
    assert json.loads(tool_deltas[0]["partial_json"]) == {"city": "Oslo"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    fake_engine.queue(*script)
    whole = (await chatml_api.post(MESSAGES, json=request)).json()
    streamed = accumulate(events)
    for message in (whole, streamed):
        anthropic.types.Message.model_validate(message)
        message.pop("id")
        for block in message["content"]:
            block.pop("id", None)
    assert streamed == whole
    assert whole["content"][:2] == [
        {"type": "thinking", "thinking": "Need weather.", "signature": ""},
        {"type": "text", "text": "Let me check."},
    ]
    assert whole["content"][2]["input"] == {"city": "Oslo"}


async def test_thinking_disabled_leaves_thinking_out(chatml_api, fake_engine) -> None:
    fake_engine.queue("<think>", "hmm", "</think>", "Hi.")
    data = (await chatml_api.post(MESSAGES, json=body(thinking={"type": "disabled"}))).json()
    assert data["content"] == [{"type": "text", "text": "Hi."}]
    fake_engine.queue("<think>", "hmm", "</think>", "Hi.")
    events = named_events(await chatml_api.post(MESSAGES, json=body(thinking={"type": "disabled"}, stream=True)))
    assert_well_formed(events)
    assert [event["content_block"]["type"] for event in events if event["type"] == "content_block_start"] == ["text"]


async def test_leaving_a_stream_early_stops_the_engine(app_factory, fake_engine) -> None:
    app = await app_factory()
    fake_engine.queue("a", "b", "c", "d")
    converted = message_input(MessagesRequest.model_validate(body()))
    events = MessageRenderer(await app.state.core.start(converted.input), converted.output).events()
    assert [(await anext(events))["type"] for _ in range(2)] == ["message_start", "content_block_start"]
    await events.aclose()
    assert fake_engine.closed_early == 1


async def test_a_forced_call_streams_as_one_tool_use_block(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_time", ', '"arguments": {}}')
    events = named_events(await api.post(MESSAGES, json=body(tools=[CLOCK], tool_choice={"type": "tool", "name": "get_time"}, stream=True)))
    assert_well_formed(events)
    assert [event["type"] for event in events[1:-2]] == ["content_block_start", "content_block_delta", "content_block_stop"]
    assert events[2]["delta"] == {"type": "input_json_delta", "partial_json": "{}"}


async def test_stream_that_fails_after_it_started_ends_with_an_error_event(api, fake_engine) -> None:
    fake_engine.queue("partial", EngineError("device lost"))
    events = named_events(await api.post(MESSAGES, json=body(stream=True)))
    assert events[0]["type"] == "message_start"
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": events[-1]["error"]["message"]}}
    assert "device lost" in events[-1]["error"]["message"]
    assert "message_stop" not in [event["type"] for event in events]
    anthropic.types.ErrorResponse.model_validate(events[-1])
    assert (await api.post(MESSAGES, json=body())).status_code == 200


# ---- count_tokens ------------------------------------------------------------------------------


async def test_count_tokens_counts_what_a_message_would_read(api, fake_engine) -> None:
    request = body(system="Be brief.", tools=[WEATHER])
    counted = (await api.post(COUNT, json={key: value for key, value in request.items() if key != "max_tokens"})).json()
    await api.post(MESSAGES, json=request)
    assert counted == {"input_tokens": len(fake_engine.requests[-1].prompt_token_ids)}
    assert len(fake_engine.requests) == 1  # counting generates nothing


# ---- errors --------------------------------------------------------------------------------------

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"max_tokens": None}, ["max_tokens"]),
        ({"max_tokens": "ten"}, ["max_tokens"]),
        ({"max_tokens": 0}, ["max_tokens", "greater than or equal to 1"]),
        ({"temperature": 1.5}, ["temperature", "less than or equal to 1"]),
        ({"model": None}, ["model"]),
        ({"messages": []}, ["messages", "at least 1"]),
        ({"messages": [{"role": "system", "content": "x"}]}, ["messages.0.role"]),
        ({"messages": [{"role": "user", "content": 5}]}, ["messages.0.content"]),
        ({"system": [{"type": "image"}]}, ["system.0"]),
        ({"stop_sequences": [""]}, ["stop_sequences", "must not be empty"]),
        ({"messages": [{"role": "user", "content": [IMAGE]}]}, ["messages.0.content.0", "image", "vision"]),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, ["messages.0.content.0", "document"]),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, ["messages.0.content.0.type", "'video'"]),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, ["messages.0.content.0.text", "required"]),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}]},
            ["messages.0.content.0.type", "assistant messages"],
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]},
            ["messages.0.content.0.tool_use_id", "'nope'"],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_time", "input": "now"}]},
                    {"role": "user", "content": "x"},
                ]
            },
            ["messages.1.content.0.input", "dictionary"],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_time", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [IMAGE]}]},
                ]
            },
            ["messages.2.content.0.content.0", "image"],
        ),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}]}, ["messages.1", "prefill"]),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "launch"}}, ["tool_choice", "'launch'"]),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, ["tool_choice", "name"]),
        ({"tool_choice": {"type": "any"}}, ["tool_choice", "needs tools"]),
        ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, ["tool_choice.type"]),
        ({"tools": [{"name": "x", "input_schema": {"type": "string"}}]}, ["tools.0.input_schema", "'object'"]),
        ({"tools": [{"name": "x", "input_schema": {"type": "object", "properties": 3}}]}, ["tools.0.input_schema", "not a valid JSON Schema"]),
        ({"tools": [{"name": "x"}]}, ["tools.0.input_schema", "required"]),
        ({"tools": [{"name": "bad name!", "input_schema": {}}]}, ["tools.0.name"]),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, ["tools.0", "custom tools"]),
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": 7}}}}, ["output_config.format.schema"]),
    ],
)
async def test_bad_requests_get_400_in_anthropics_shape_naming_the_field(api, fake_engine, fields, names) -> None:
    request = {key: value for key, value in body(**fields).items() if value is not None}
    assert_error(await api.post(MESSAGES, json=request), 400, "invalid_request_error", *names)
    assert not fake_engine.requests, "nothing reached the engine"
    assert (await api.post(MESSAGES, json=body())).status_code == 200, "the server keeps serving"


async def test_count_tokens_refuses_bad_requests_the_same_way(api) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": [IMAGE]}]}
    assert_error(await api.post(COUNT, json=request), 400, "invalid_request_error", "messages.0.content.0", "image")


async def test_malformed_json_gets_400_in_anthropics_shape(api) -> None:
    response = await api.post(MESSAGES, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request_error", "json")


async def test_prompt_over_the_context_gets_400_before_the_stream(app_factory, fake_engine) -> None:
    fake_engine._info = fake_engine._info.__class__(**{**fake_engine._info.__dict__, "context_length": 64})
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        long = body(messages=[{"role": "user", "content": "x" * 200}], stream=True)
        assert_error(await client.post(MESSAGES, json=long), 400, "invalid_request_error", "64 tokens", "messages")
        assert_error(await client.post(MESSAGES, json=body(max_tokens=60)), 400, "invalid_request_error", "max_tokens")


async def test_overloaded_engine_gets_429_rate_limit_error_with_retry_after(api, fake_engine) -> None:
    fake_engine.fail_next(EngineOverloadedError("all 4 slots busy and the queue is full", retry_after_seconds=2))
    response = await api.post(MESSAGES, json=body(stream=True))
    assert_error(response, 429, "rate_limit_error", "queue is full")
    assert response.headers["retry-after"] == "2"


def test_error_types_follow_anthropics_statuses() -> None:
    statuses = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error",
                502: "api_error", 503: "overloaded_error", 529: "overloaded_error"}
    assert {status: error_type(status) for status in statuses} == statuses


async def test_unknown_path_under_messages_gets_not_found_error(api) -> None:
    assert_error(await api.post("/v1/messages/batches", json={}), 404, "not_found_error", "/v1/messages/batches")


async def test_api_key_as_x_api_key_or_bearer(app_factory) -> None:
    app = await app_factory(api_key="sekret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.post(MESSAGES, json=body()), 401, "authentication_error", "api key")
        assert_error(await client.post(MESSAGES, json=body(), headers={"x-api-key": "wrong"}), 401, "authentication_error")
        assert (await client.post(MESSAGES, json=body(), headers={"x-api-key": "sekret"})).status_code == 200
        assert (await client.post(COUNT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer sekret"})).status_code == 200
