"""Real tier: the Responses API through the official `openai` client (and Home Assistant's request
shape) against a live server on the packaged model, on every engine."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseOutputItemAddedEvent,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel, Field

from tests.responses_checks import check_response, check_stream, named_events
from tests.test_responses_api import home_assistant_request

pytestmark = pytest.mark.real

TURN_ON = {
    "type": "function",
    "name": "HassTurnOn",
    "description": "Turns on a device or entity",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}}},
    "strict": False,
}
INSTRUCTIONS = "You are a voice assistant for a smart home. Use the tools to act."
ASK = "Turn on the kitchen light."


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.api_url, api_key="x", max_retries=0, timeout=300)


def checked(response: openai.types.responses.Response) -> openai.types.responses.Response:
    check_response(response.to_dict())
    return response


def test_create_with_a_string(client: openai.OpenAI) -> None:
    response = checked(client.responses.create(model="x", input="The capital of France is", max_output_tokens=8, temperature=0))
    assert response.status in {"completed", "incomplete"}
    assert response.output[0].type == "message" and response.output_text == response.output[0].content[0].text
    assert 1 <= response.usage.output_tokens <= 8
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_create_with_items_and_instructions(client: openai.OpenAI) -> None:
    items = [{"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": "Say hello."}]
    bare = checked(client.responses.create(model="x", input=items, max_output_tokens=4, temperature=0))
    instructed = checked(client.responses.create(model="x", input=items, instructions="You are Jarvis.", max_output_tokens=4, temperature=0))
    assert instructed.instructions == "You are Jarvis."
    assert instructed.usage.input_tokens > bare.usage.input_tokens  # the instructions reached the prompt


def test_stream_events_join_to_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="x", input="Once upon a time", max_output_tokens=8, temperature=0) as stream:
        events = list(stream)
    final = check_stream([event.to_dict() for event in events])
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text and final["output"][0]["content"][0]["text"] == text
    assert events[-1].type in {"response.completed", "response.incomplete"}


def test_raw_stream_is_named_events_without_done(live_server) -> None:
    response = httpx.post(
        f"{live_server.api_url}/responses", json={"model": "x", "input": "Hello", "max_output_tokens": 4, "stream": True}, timeout=300
    )
    events = named_events(response)
    assert "[DONE]" not in response.text
    assert events[-1]["response"]["usage"]["output_tokens"] >= 1


def test_forced_call_then_its_output_gives_a_text_answer(client: openai.OpenAI) -> None:
    first = checked(client.responses.create(
        model="x", instructions=INSTRUCTIONS, input=ASK, tools=[TURN_ON], tool_choice="required", max_output_tokens=48, temperature=0
    ))
    assert first.status == "completed"
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "HassTurnOn" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), {**TURN_ON["parameters"], "additionalProperties": False})
    result = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"success": True})}
    # Continued from the stored response (instructions are not carried over: sent again) ...
    continued = checked(client.responses.create(
        model="x", previous_response_id=first.id, instructions=INSTRUCTIONS, input=[result],
        tools=[TURN_ON], tool_choice="none", max_output_tokens=12, temperature=0,
    ))
    # ... and with the whole item list, as a client without stored responses sends it.
    items = [{"role": "developer", "content": INSTRUCTIONS}, {"role": "user", "content": ASK}, call.to_dict(), result]
    resent = checked(client.responses.create(model="x", input=items, tools=[TURN_ON], tool_choice="none", max_output_tokens=12, temperature=0))
    for answer in (continued, resent):
        assert [item.type for item in answer.output] == ["message"] and answer.output_text
    # The same conversation both ways: the same prompt, and (greedy) the same answer.
    assert continued.usage.input_tokens == resent.usage.input_tokens
    assert continued.output_text == resent.output_text


def test_streamed_forced_call_arrives_whole_in_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="x", instructions=INSTRUCTIONS, input=ASK, tools=[TURN_ON], tool_choice="required", max_output_tokens=48, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_stream([event.to_dict() for event in events])
    arguments = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == arguments
    jsonschema.validate(json.loads(arguments), {**TURN_ON["parameters"], "additionalProperties": False})


class Room(BaseModel):
    room: str = Field(max_length=20)
    lights_on: bool


def test_parse_gives_a_parsed_object(client: openai.OpenAI) -> None:
    response = client.responses.parse(
        model="x", input="Describe the kitchen: the lights are on.", text_format=Room, max_output_tokens=48, temperature=0
    )
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Room)
    assert response.text.format.type == "json_schema"


def test_previous_response_id_continues_and_unknown_ids_are_refused(client: openai.OpenAI) -> None:
    first = checked(client.responses.create(model="x", input="My name is Ada.", max_output_tokens=4, temperature=0))
    second = checked(client.responses.create(model="x", previous_response_id=first.id, input="What is my name?", max_output_tokens=4, temperature=0))
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(second.id).to_dict() == second.to_dict()
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="x", previous_response_id=first.id, input="And now?", max_output_tokens=4)
    assert refused.value.code == "previous_response_not_found" and refused.value.param == "previous_response_id"


def test_small_max_output_tokens_gives_incomplete(client: openai.OpenAI) -> None:
    response = checked(client.responses.create(model="x", input="Count with me: one, two, three,", max_output_tokens=2, temperature=0))
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 2


def test_bad_requests_are_400s_and_the_server_keeps_serving(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as web_search:
        client.responses.create(model="x", input="hi", tools=[{"type": "web_search_preview"}])
    assert web_search.value.param == "tools.0.type"
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]
    with pytest.raises(openai.BadRequestError) as vision:
        client.responses.create(model="x", input=image)
    assert vision.value.param == "input.0.content.0"
    assert checked(client.responses.create(model="x", input="Hi", max_output_tokens=2)).usage.output_tokens >= 1


async def _home_assistant_turn(client: openai.AsyncOpenAI, request: dict) -> tuple[list, list[dict], str]:
    """Reads a stream as homeassistant/components/openai_conversation/entity.py does."""
    stream = await client.responses.create(**request)
    events, calls, text = [], [], ""
    current_call = None
    async for event in stream:
        events.append(event)
        if isinstance(event, ResponseOutputItemAddedEvent) and isinstance(event.item, ResponseFunctionToolCall):
            current_call = event.item
        elif isinstance(event, ResponseTextDeltaEvent):
            text += event.delta
        elif isinstance(event, ResponseFunctionCallArgumentsDeltaEvent):
            current_call.arguments += event.delta
        elif isinstance(event, ResponseFunctionCallArgumentsDoneEvent):
            calls.append({"id": current_call.call_id, "name": current_call.name, "args": json.loads(current_call.arguments)})
        elif isinstance(event, ResponseCompletedEvent | ResponseIncompleteEvent):
            assert event.response.usage.input_tokens > 0
    return events, calls, text


def test_home_assistant_openai_conversation_round_trip(live_server) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=live_server.api_url, api_key="x", max_retries=0, timeout=300)
        request = home_assistant_request(max_output_tokens=16, temperature=0)
        events, calls, text = await _home_assistant_turn(client, request)
        check_stream([event.to_dict() for event in events])
        assert calls or text
        # The second round trip after a call, as HA sends it: the call and its result appended.
        request["input"] = [
            *request["input"],
            {"type": "function_call", "name": "HassTurnOn", "arguments": json.dumps({"name": "kitchen light"}), "call_id": "call_ha_1"},
            {"type": "function_call_output", "call_id": "call_ha_1", "output": json.dumps({"success": True})},
        ]
        events, calls, text = await _home_assistant_turn(client, request)
        final = check_stream([event.to_dict() for event in events])
        assert final["store"] is False and (calls or text)
        await client.close()

    asyncio.run(run())
