"""Fast tier: OpenAI's Responses API (/v1/responses) over the fake engine: shapes, event order,
tools, structured output, stored responses, and errors."""

from __future__ import annotations

import json

import httpx
import pytest

from backends.base import EngineError
from core.types import Finish, TextDelta, ToolCall, ToolCallEvent, Usage
from protocols.responses.render import ResponseRenderer
from tests.responses_checks import check_response, check_stream, named_events
from tests.test_api import assert_error

RESPONSES = "/v1/responses"

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def body(**fields: object) -> dict[str, object]:
    return {"model": "anything", "input": "hi", **fields}


async def create(api: httpx.AsyncClient, **fields: object) -> dict:
    response = await api.post(RESPONSES, json=body(**fields))
    assert response.status_code == 200, response.text
    data = response.json()
    check_response(data)
    return data


async def stream(api: httpx.AsyncClient, **fields: object) -> list[dict]:
    return named_events(await api.post(RESPONSES, json=body(stream=True, **fields)))


# ---- whole responses ---------------------------------------------------------------------------


async def test_whole_response_shape_usage_and_echo(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    data = await create(api, metadata={"room": "kitchen"}, temperature=0.2, max_output_tokens=50, tools=[WEATHER])
    assert data["status"] == "completed" and data["error"] is None and data["incomplete_details"] is None
    (message,) = data["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["id"].startswith("msg_")
    assert message["content"] == [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    prompt_tokens = len(fake_engine.requests[-1].prompt_token_ids)
    assert data["usage"] == {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": prompt_tokens},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + 2,
    }
    assert data["metadata"] == {"room": "kitchen"}
    assert (data["temperature"], data["max_output_tokens"], data["tool_choice"]) == (0.2, 50, "auto")
    assert data["tools"] == [WEATHER]
    assert data["text"]["format"] == {"type": "text"}
    assert fake_engine.requests[-1].sampling.temperature == 0.2
    assert fake_engine.requests[-1].sampling.max_tokens == 50


async def test_instructions_come_first_as_system_and_roles_map(api, fake_engine) -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello "}, {"type": "input_text", "text": "there"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!", "annotations": []}]},
        {"role": "user", "content": "Bye"},
    ]
    data = await create(api, instructions="You are Jarvis.", input=items)
    prompt = fake_engine.prompts[-1]
    assert prompt.index("You are Jarvis.") < prompt.index("Be brief.") < prompt.index("Hello there") < prompt.index("Hi!") < prompt.index("Bye")
    assert data["instructions"] == "You are Jarvis."


async def test_unknown_fields_are_accepted_and_cache_key_is_user_then_prompt_cache_key(api, fake_engine) -> None:
    extra = {"service_tier": "auto", "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low"},
             "truncation": "auto", "prompt_cache_retention": "24h", "safety_identifier": "s", "top_k_unknown": 3}
    data = await create(api, prompt_cache_key="conversation-7", **extra)
    assert fake_engine.requests[-1].cache_key == "conversation-7"
    assert data["reasoning"] == {"effort": "low", "summary": None} and data["truncation"] == "auto"
    await create(api, prompt_cache_key="conversation-7", user="alice")
    assert fake_engine.requests[-1].cache_key == "alice"


# ---- streams ------------------------------------------------------------------------------------


async def test_stream_of_text_has_the_typed_events_in_order(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    events = await stream(api)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert [event["delta"] for event in events[4:6]] == ["Hel", "lo"]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["output_tokens"] == 2


async def test_whole_and_streamed_answers_are_the_same_object(api, fake_engine) -> None:
    fake_engine.queue("Same", " answer")
    whole = await create(api)
    fake_engine.queue("Same", " answer")
    streamed = (await stream(api))[-1]["response"]

    def without_ids(data: dict) -> dict:
        return {**data, "id": None, "created_at": None, "completed_at": None, "output": [{**item, "id": None} for item in data["output"]]}

    assert without_ids(whole) == without_ids(streamed)


async def test_forced_call_streams_as_a_function_call_item(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    events = await stream(api, tools=[WEATHER], tool_choice="required")
    types = [event["type"] for event in events]
    assert types[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["arguments"] == "" and added["status"] == "in_progress"
    assert added["id"].startswith("fc_") and added["call_id"].startswith("call_") and added["name"] == "get_weather"
    assert json.loads(events[3]["delta"]) == {"city": "Paris"}
    assert events[4]["name"] == "get_weather"
    assert events[-1]["response"]["output"] == [{**added, "status": "completed", "arguments": events[3]["delta"]}]
    schema = fake_engine.requests[-1].sampling.constraint.schema
    assert schema["properties"]["name"] == {"const": "get_weather"}


async def test_named_tool_choice_constrains_to_that_function(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    data = await create(api, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert data["output"][0]["name"] == "get_weather"
    assert data["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert fake_engine.requests[-1].sampling.constraint.schema["properties"]["name"] == {"const": "get_weather"}


async def test_text_then_call_gives_a_message_then_a_call_and_no_text_after(app_factory, fake_engine) -> None:
    app = await app_factory(chat_format="chatml")
    fake_engine.queue("Let me check. ", "<tool", "_call>", '{"name": "get_weather", "arguments": {"city": "Rome"}}', "</tool_call>")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        events = await stream(client, tools=[WEATHER])
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me check. "
    assert json.loads(final["output"][1]["arguments"]) == {"city": "Rome"}


async def test_reasoning_goes_to_a_reasoning_item_before_the_message(app_factory, fake_engine) -> None:
    app = await app_factory(chat_format="chatml")
    fake_engine.queue("<think>", "Sunny", " days", "</think>", "It is ", "sunny.")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        events = await stream(client)
    types = [event["type"] for event in events]
    assert "response.reasoning_text.delta" in types
    final = events[-1]["response"]
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Sunny days"}] and reasoning["summary"] == []
    assert message["content"][0]["text"] == "It is sunny."
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


async def test_max_output_tokens_gives_an_incomplete_response(api, fake_engine) -> None:
    fake_engine.queue("one", " two", " three", " four")
    events = await stream(api, max_output_tokens=2)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and final["output"][0]["content"][0]["text"] == "one two"
    fake_engine.queue("one", " two", " three")
    assert (await create(api, max_output_tokens=2))["status"] == "incomplete"


async def test_a_failure_after_the_stream_started_ends_it_with_error_and_response_failed(api, fake_engine) -> None:
    fake_engine.queue("partial", EngineError("device lost"))
    events = await stream(api)
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert "device lost" in events[-2]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error" and "device lost" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "partial"
    fake_engine.queue("still", " serving")
    assert (await create(api))["output"][0]["content"][0]["text"] == "still serving"


async def test_an_empty_answer_still_has_a_message(api, fake_engine) -> None:
    fake_engine.queue("")
    data = await create(api)
    assert data["output"][0]["content"][0]["text"] == ""


# ---- the stream checker itself ----------------------------------------------------------------


def renumbered(events: list[dict]) -> list[dict]:
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


async def test_the_stream_checker_catches_broken_streams(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    good = await stream(api)
    broken = {
        "a missing sequence_number": [*good[:3], {k: v for k, v in good[3].items() if k != "sequence_number"}, *good[4:]],
        "a repeated sequence_number": [*good[:4], {**good[4], "sequence_number": 3}, *good[5:]],
        "a stream without its terminal event": good[:-1],
        "a delta before its item": renumbered([*good[:2], good[4], *good[2:4], *good[5:]]),
        "a missing output_item.done": renumbered([*good[:8], good[9]]),
    }
    for problem, events in broken.items():
        with pytest.raises(AssertionError):
            check_stream(events)
            pytest.fail(f"the checker missed {problem}")


async def test_text_after_a_tool_call_is_caught_by_the_renderer_and_the_checker(api, fake_engine) -> None:
    class Events:
        def __init__(self, *events: object) -> None:
            self._events = events

        async def __aiter__(self):
            for event in self._events:
                yield event

        async def aclose(self) -> None:
            pass

    call = ToolCall("call_1", "get_weather", {"city": "Rome"}, '{"city": "Rome"}')
    renderer = ResponseRenderer("resp_x", "m", {})
    with pytest.raises(RuntimeError, match="text after a tool call"):
        async for _ in renderer.events(Events(ToolCallEvent(0, call), TextDelta("more"))):  # type: ignore[arg-type]
            pass
    # A stream that did it anyway fails the checker.
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Rome"}}')
    call_events = await stream(api, tools=[WEATHER], tool_choice="required")
    fake_engine.queue("late")
    text_events = await stream(api)
    spliced = [*call_events[:-1], *[{**event, "output_index": 1} for event in text_events[2:-1] if "output_index" in event], call_events[-1]]
    with pytest.raises(AssertionError, match="after a tool call"):
        check_stream(renumbered(spliced))
    finished = Finish("stop", Usage(1, 1))
    assert (await ResponseRenderer("resp_y", "m", {}).whole(Events(TextDelta("ok"), finished)))["status"] == "completed"  # type: ignore[arg-type]


# ---- tool round trips and stored responses ------------------------------------------------------


async def test_function_call_output_round_trip_with_the_whole_item_list(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    first = await create(api, input="Weather in Paris?", tools=[WEATHER], tool_choice="required")
    (call,) = first["output"]
    fake_engine.queue("It is sunny in Paris.")
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        call,  # the output item sent back as is, as the Agents SDK does
        {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps({"sky": "sunny"})},
    ]
    second = await create(api, input=items, tools=[WEATHER])
    prompt = fake_engine.prompts[-1]
    assert '"city": "Paris"' in prompt and '{"sky": "sunny"}' in prompt
    assert prompt.index("Weather in Paris?") < prompt.index('"city": "Paris"') < prompt.index('{"sky": "sunny"}')
    assert second["output"][0]["content"][0]["text"] == "It is sunny in Paris."


async def test_previous_response_id_continues_the_conversation_without_its_instructions(api, fake_engine) -> None:
    fake_engine.queue("Nice to meet you, Ada.")
    first = await create(api, instructions="FIRST-INSTRUCTIONS", input="My name is Ada.", user="ada")
    fake_engine.queue("Your name is Ada.")
    second = await create(api, instructions="SECOND-INSTRUCTIONS", input="What is my name?", previous_response_id=first["id"])
    prompt = fake_engine.prompts[-1]
    assert "FIRST-INSTRUCTIONS" not in prompt and prompt.index("SECOND-INSTRUCTIONS") < prompt.index("My name is Ada.")
    assert prompt.index("My name is Ada.") < prompt.index("Nice to meet you, Ada.") < prompt.index("What is my name?")
    assert second["previous_response_id"] == first["id"]
    assert fake_engine.requests[-1].cache_key == "ada"  # the conversation keeps its prompt cache
    fake_engine.queue("Third.")
    await create(api, input="And again?", previous_response_id=second["id"])
    assert fake_engine.prompts[-1].count("My name is Ada.") == 1 and "Your name is Ada." in fake_engine.prompts[-1]


async def test_tool_round_trip_through_previous_response_id(api, fake_engine) -> None:
    fake_engine.queue('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    first = await create(api, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required")
    fake_engine.queue("Cold.")
    output = {"type": "function_call_output", "call_id": first["output"][0]["call_id"], "output": "-5 C"}
    await create(api, input=[output], previous_response_id=first["id"], tools=[WEATHER])
    prompt = fake_engine.prompts[-1]
    assert prompt.index("Weather in Oslo?") < prompt.index('"city": "Oslo"') < prompt.index("-5 C")


async def test_stored_responses_can_be_retrieved_and_deleted(api, fake_engine) -> None:
    fake_engine.queue("Kept.")
    data = await create(api)
    retrieved = await api.get(f"{RESPONSES}/{data['id']}")
    assert retrieved.status_code == 200 and retrieved.json() == data
    deleted = await api.delete(f"{RESPONSES}/{data['id']}")
    assert deleted.json() == {"id": data["id"], "object": "response.deleted", "deleted": True}
    assert_error(await api.get(f"{RESPONSES}/{data['id']}"), 404, says="not found")
    assert_error(await api.delete(f"{RESPONSES}/{data['id']}"), 404, says="not found")
    assert_error(await api.post(RESPONSES, json=body(previous_response_id=data["id"])), 400, param="previous_response_id")


async def test_store_false_keeps_nothing(api, fake_engine) -> None:
    data = await create(api, store=False)
    assert data["store"] is False
    assert_error(await api.get(f"{RESPONSES}/{data['id']}"), 404)
    error = assert_error(await api.post(RESPONSES, json=body(previous_response_id=data["id"])), 400, param="previous_response_id")
    assert error["code"] == "previous_response_not_found" and "store: false" in error["message"]


async def test_the_store_keeps_the_most_recently_used_responses(app_factory) -> None:
    app = await app_factory(responses_store_size=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        first, second = await create(client), await create(client)
        assert (await client.get(f"{RESPONSES}/{first['id']}")).status_code == 200  # first is now the most recent
        third = await create(client)
        assert (await client.get(f"{RESPONSES}/{second['id']}")).status_code == 404
        assert [(await client.get(f"{RESPONSES}/{data['id']}")).status_code for data in (first, third)] == [200, 200]


async def test_streamed_responses_are_stored_when_they_finish(api, fake_engine) -> None:
    fake_engine.queue("Streamed.")
    final = (await stream(api))[-1]["response"]
    assert (await api.get(f"{RESPONSES}/{final['id']}")).json() == final


# ---- Home Assistant's openai_conversation -----------------------------------------------------


HA_TOOLS = [
    {"type": "function", "name": "HassTurnOn", "description": "Turns on a device", "strict": False,
     "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}}, "required": []}},
    {"type": "function", "name": "GetLiveContext", "description": "Current state", "strict": False, "parameters": {"type": "object", "properties": {}}},
]


def home_assistant_request(**fields: object) -> dict[str, object]:
    """What homeassistant/components/openai_conversation sends each turn (entity.py)."""
    return {
        "model": "gpt-4o-mini",
        "input": [
            {"type": "message", "role": "developer", "content": "You are a voice assistant for Home Assistant."},
            {"type": "message", "role": "user", "content": "Turn on the kitchen light"},
        ],
        "max_output_tokens": 150,
        "top_p": 1.0,
        "temperature": 1.0,
        "user": "01JCONVERSATION",
        "store": False,
        "stream": True,
        "tools": HA_TOOLS,
        **fields,
    }


async def test_home_assistant_turn_with_a_call_then_the_answer(api, fake_engine) -> None:
    fake_engine.queue('{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}')
    events = named_events(await api.post(RESPONSES, json=home_assistant_request()))
    # What HA reads: output_item.added (the call, arguments empty), the arguments deltas joined,
    # arguments.done (then json.loads of the joined text), completed with usage.
    added = next(event for event in events if event["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    arguments = "".join(event["delta"] for event in events if event["type"] == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"name": "kitchen light"}
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"]["input_tokens"] > 0
    call = added["item"]
    # HA's second round trip: the call and its result appended to the same input, store false again.
    fake_engine.queue("The kitchen light is on.")
    follow_up = home_assistant_request()
    follow_up["input"] = [
        *follow_up["input"],  # type: ignore[misc]
        {"type": "function_call", "name": call["name"], "arguments": arguments, "call_id": call["call_id"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps({"success": True})},
    ]
    events = named_events(await api.post(RESPONSES, json=follow_up))
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert text == "The kitchen light is on."
    assert events[-1]["response"]["store"] is False
    assert (await api.get(f"{RESPONSES}/{events[-1]['response']['id']}")).status_code == 404
    assert fake_engine.requests[-1].cache_key == "01JCONVERSATION"


async def test_home_assistant_reasoning_items_sent_back_are_accepted(api, fake_engine) -> None:
    request = home_assistant_request()
    request["input"] = [
        *request["input"],  # type: ignore[misc]
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
        {"type": "message", "role": "assistant", "content": "Done."},
        {"type": "message", "role": "user", "content": "Thanks"},
    ]
    named_events(await api.post(RESPONSES, json=request))


async def test_home_assistant_ai_task_json_schema_is_constrained(api, fake_engine) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": False, "strict": True}
    fake_engine.queue('{"name": "Rex"}')
    events = named_events(await api.post(RESPONSES, json=home_assistant_request(text={"format": {"type": "json_schema", "name": "pet", "schema": schema}})))
    assert fake_engine.requests[-1].sampling.constraint.schema["properties"] == schema["properties"]
    assert events[-1]["response"]["text"]["format"]["name"] == "pet"


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"input": None}, "input", ""),
        ({"input": 5}, "input", ""),
        ({"input": []}, "input", "at least 1"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
        ({"tools": "get_weather"}, "tools", ""),
        ({"metadata": {"a": 1}}, "metadata.a", "valid string"),
        ({"tool_choice": "sometimes"}, "tool_choice", ""),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "not available here"),
        ({"tools": [{"type": "web_search_preview"}]}, "tools.0.type", "function tools only"),
        ({"tools": [{"type": "function", "parameters": {"type": "object"}}]}, "tools.0.name", "needs a name"),
        ({"tools": [{**WEATHER, "parameters": {"type": "array"}}]}, "tools.0.parameters", "type 'object'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "not among the tools"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                                  {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]},
         "input.0.content.1", "no vision"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}, "input.0.content.0", "text only"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input.0.role", "input should be"),
        ({"input": [{"type": "function_call", "name": "get_weather", "arguments": "{}"}]}, "input.0.call_id", "field required"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{not json"}]}, "input.0.arguments", "not valid json"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input.0.output", "field required"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type", "not available here"),
        ({"input": ["hello"]}, "input", "input.0: input should be a valid dictionary"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format", "needs a schema"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}},
         "text.format.schema", "not a valid json schema"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type", ""),
        ({"text": {"format": {"type": "json_object"}}, "tools": [WEATHER], "tool_choice": "required"}, "text.format", "cannot be combined"),
        ({"previous_response_id": "resp_unknown"}, "previous_response_id", "not found"),
        ({"background": True}, "background", "not available here"),
        ({"conversation": "conv_1"}, "conversation", "not stored here"),
        ({"max_output_tokens": 10_000}, "max_output_tokens", "maximum context length"),
    ],
)
async def test_bad_requests_get_openai_400s_naming_the_field(api, fake_engine, fields, param, says) -> None:
    assert_error(await api.post(RESPONSES, json=body(**fields)), 400, param=param, says=says)
    fake_engine.queue("still", " here")
    assert (await create(api))["output"][0]["content"][0]["text"] == "still here"


async def test_missing_input_and_non_object_bodies_get_400(api) -> None:
    assert_error(await api.post(RESPONSES, json={"model": "m"}), 400, param="input", says="field required")
    assert_error(await api.post(RESPONSES, json=[1, 2]), 400)
    assert_error(await api.post(RESPONSES, content=b"{nope", headers={"content-type": "application/json"}), 400, says="not valid json")


async def test_a_bad_request_while_streaming_is_a_400_not_a_stream(api) -> None:
    response = await api.post(RESPONSES, json=body(stream=True, tools=[{"type": "file_search"}]))
    assert_error(response, 400, param="tools.0.type")
    assert not response.headers["content-type"].startswith("text/event-stream")


async def test_api_key_is_required_when_configured(app_factory) -> None:
    app = await app_factory(api_key="sekret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.post(RESPONSES, json=body()), 401, says="api key")
        assert_error(await client.get(f"{RESPONSES}/resp_x"), 401)
        response = await client.post(RESPONSES, json=body(), headers={"Authorization": "Bearer sekret"})
        assert response.status_code == 200
