"""Real tier: Anthropic's Messages API through the official `anthropic` SDK against a live server
on 127.0.0.1 with the packaged model, on every engine. The model is a small base model: the tests
check behaviour (shapes, stop reasons, calls that validate), not the wisdom of its answers.

The SDK (2.x) no longer has a `temperature` argument; Anthropic's API still takes the field,
so greedy requests send it through `extra_body`."""

from __future__ import annotations

import anthropic
import jsonschema
import pytest

pytestmark = pytest.mark.real

GREEDY = {"extra_body": {"temperature": 0}}
SYSTEM = "You are a helpful assistant in a smart home."
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
LIGHT = {
    "name": "turn_on",
    "description": "Turns on a device in a room",
    "input_schema": {
        "type": "object",
        "properties": {"device": {"type": "string"}, "room": {"type": "string"}},
        "required": ["device"],
    },
}
ASK_LIGHT = [{"role": "user", "content": "Turn on the kitchen light."}]


@pytest.fixture(scope="module")
def client(live_server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server.base_url, api_key="anything", max_retries=0, timeout=300)


def warm_up(client: anthropic.Anthropic, **request: object) -> None:
    """One request first, so that the comparisons after it start from the same prompt cache
    (see test_live_chat.warm_up: greedy decoding is reproducible for one cache state)."""
    client.messages.create(**{**request, "max_tokens": 1}, **GREEDY)


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_create_with_system_and_user(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="jarvis", max_tokens=8, system=SYSTEM, messages=STORY, **GREEDY)
    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == "gemma-3-270m-q4_k_m"  # the model that answered, as Anthropic reports it
    assert [block.type for block in message.content] == ["text"]
    assert text_of(message).strip()
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert 0 < message.usage.output_tokens <= 8
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 10


def test_stream_joins_to_the_whole_answer(client: anthropic.Anthropic) -> None:
    request = {"model": "jarvis", "system": SYSTEM, "messages": STORY, "max_tokens": 16}
    warm_up(client, **request)
    whole = client.messages.create(**request, **GREEDY)
    with client.messages.stream(**request, **GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3, "the answer should arrive token by token"
    assert "".join(pieces) == text_of(whole) == text_of(final)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == whole.usage.input_tokens + whole.usage.cache_read_input_tokens


def test_small_max_tokens_gives_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="jarvis", max_tokens=2, messages=STORY, **GREEDY)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_stop_sequence_ends_the_answer_and_is_reported(client: anthropic.Anthropic) -> None:
    request = {"model": "jarvis", "system": SYSTEM, "messages": STORY, "max_tokens": 16}
    warm_up(client, **request)
    free = text_of(client.messages.create(**request, **GREEDY))
    assert len(free) > 8, free
    stop = free[len(free) // 2 : len(free) // 2 + 3]  # lands inside the answer, likely across tokens
    cut = free.index(stop)
    message = client.messages.create(**request, stop_sequences=[stop], **GREEDY)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    assert text_of(message) == free[:cut]
    with client.messages.stream(**request, stop_sequences=[stop], **GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == free[:cut]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def assert_valid_tool_use(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    assert message.stop_reason == "tool_use"
    (block,) = [block for block in message.content if block.type == "tool_use"]
    assert block.id.startswith("toolu_") and block.name == "turn_on"
    jsonschema.validate(block.input, {**LIGHT["input_schema"], "additionalProperties": False})
    return block


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    """A forced call, its result sent back, then a text answer (tool_choice none: a base model
    shown the tools again would as likely call one again)."""
    first = client.messages.create(
        model="jarvis", max_tokens=48, system=SYSTEM, messages=ASK_LIGHT, tools=[LIGHT], tool_choice={"type": "any"}, **GREEDY
    )
    block = assert_valid_tool_use(first)
    follow_up = [
        *ASK_LIGHT,
        {"role": "assistant", "content": first.content},  # the SDK's blocks, sent back as they came
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "The kitchen light is on."}]},
    ]
    second = client.messages.create(
        model="jarvis", max_tokens=16, system=SYSTEM, messages=follow_up, tools=[LIGHT], tool_choice={"type": "none"}, **GREEDY
    )
    assert second.stop_reason in {"end_turn", "max_tokens"}
    assert [content.type for content in second.content] == ["text"] and text_of(second).strip()


def test_streamed_tool_use_gives_the_input_as_an_object(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="jarvis", max_tokens=48, system=SYSTEM, messages=ASK_LIGHT, tools=[LIGHT], tool_choice={"type": "tool", "name": "turn_on"}, **GREEDY
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["tool_use"]
    assert_valid_tool_use(final)


def test_count_tokens_matches_what_a_message_reads(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="jarvis", system=SYSTEM, messages=ASK_LIGHT, tools=[LIGHT])
    message = client.messages.create(model="jarvis", max_tokens=1, system=SYSTEM, messages=ASK_LIGHT, tools=[LIGHT], **GREEDY)
    assert counted.input_tokens > 20
    assert counted.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens


def test_bad_requests_are_bad_request_errors_and_the_server_keeps_serving(client: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="jarvis", max_tokens=4, messages=[{"role": "user", "content": [image]}])
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0" in raised.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="jarvis", max_tokens=4, messages=STORY, extra_body={"temperature": 1.5})
    assert "temperature" in raised.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="jarvis", max_tokens=4, messages=ASK_LIGHT, tools=[LIGHT], tool_choice={"type": "tool", "name": "launch"})
    assert client.messages.create(model="jarvis", max_tokens=2, messages=STORY).content
