"""Fast tier: Home Assistant's Ollama integration's request sequence (tests/home_assistant_ollama.py)
through the real `ollama` client against the app over the fake engine, whose scripted answers
make the tool turn deterministic: setup, model choice, polling, a streamed tool turn and the
round trip with the tool result."""

from __future__ import annotations

from datetime import datetime

import httpx
import ollama
import pytest

from tests import home_assistant_ollama as ha

URL = "http://homeassistant-test"
TURN_ON = ha.format_tool(
    "HassTurnOn",
    "Turns on/opens/presses a device or entity",
    {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}, "domain": {"type": "array", "items": {"type": "string"}}}},
)
GET_LIVE_CONTEXT = ha.format_tool("GetLiveContext", "Provides real-time information", {"type": "object", "properties": {}})
SYSTEM = "You are a voice assistant for Home Assistant. Answer in plain text. Keep it simple and to the point."


@pytest.fixture
async def served(app_factory):
    app = await app_factory(model_alias="gemma3:270m", api_key="ha-secret")
    return {"transport": httpx.ASGITransport(app=app)}


async def test_setup_validates_the_connection_and_the_key(served) -> None:
    assert await ha.validate_connection(URL, "ha-secret", **served) == {}
    assert await ha.validate_connection(URL, "wrong", **served) == {"base": "invalid_auth"}
    assert await ha.validate_connection(URL, None, **served) == {"base": "invalid_auth"}


async def test_model_choice_lists_and_pulls(served) -> None:
    client = ha.make_client(URL, "ha-secret", **served)
    assert await ha.downloaded_models(client) == {"fake-model:latest", "gemma3:270m"}
    assert await ha.choose_model(client, "gemma3:270m") == "finish"  # listed: no pull
    assert await ha.choose_model(client, "fake-model") == "finish"  # listed as fake-model:latest: pulled, and it is ours
    assert await ha.choose_model(client, "gemma3") == "failed"  # gemma3:latest is not gemma3:270m
    assert await ha.choose_model(client, "llama3.2:latest") == "failed"  # this server does not download
    await ha.setup_entry(client)


async def test_polling_reads_tags_and_ps(served) -> None:
    client = ha.make_client(URL, "ha-secret", **served)
    values = ha.sensor_values(await ha.poll(client))
    assert values == {
        "loaded_models": 1,
        "loaded_names": ["fake-model:latest"],
        "installed_models": 2,
        "installed_names": ["fake-model:latest", "gemma3:270m"],
        "loaded_model_size": 0,  # the fake model has no file
        "loaded_model_gpu_memory": 0,
    }
    with pytest.raises(ha.ConfigEntryAuthFailed):
        await ha.poll(ha.make_client(URL, "expired", **served))


async def test_a_streamed_tool_turn_and_its_round_trip(served, fake_engine) -> None:
    client = ha.make_client(URL, "ha-secret", **served)
    history = [ollama.Message(role="system", content=SYSTEM), ollama.Message(role="user", content="Turn on the kitchen light")]
    tools = [TURN_ON, GET_LIVE_CONTEXT]
    fake_engine.queue('{"name": "HassTurnOn", "arguments": ', '{"name": "kitchen light", "area": ""}}')
    turn = await ha.chat_round(client, "gemma3:270m", history, tools, num_ctx=4096)
    assert turn.deltas[0]["role"] == "assistant"
    assert turn.tool_calls == [("HassTurnOn", {"name": "kitchen light"})]  # "" dropped by Home Assistant
    assert turn.responses[-1].done is True and turn.responses[-1].done_reason == "stop"
    assert all(response.done is False for response in turn.responses[:-1])
    request = fake_engine.requests[-1]
    assert request.sampling.temperature == 0.8  # Home Assistant sends no sampling options: Ollama's defaults

    history += [turn.message(), ha.tool_result({"success": [{"name": "Kitchen light", "type": "entity"}]})]
    fake_engine.queue("The kitchen ", "light is on.")
    answer = await ha.chat_round(client, "gemma3:270m", history, tools, num_ctx=4096)
    assert answer.content == "The kitchen light is on." and answer.tool_calls == []
    prompt = fake_engine.prompts[-1]
    assert '{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}' in prompt
    assert 'Tool result:\n{"data": {"success": [{"name": "Kitchen light"' in prompt

    loaded = (await client.ps()).models[0]
    assert loaded.expires_at is not None and loaded.expires_at.year > 2200  # keep_alive -1 keeps it loaded


async def test_keep_alive_in_seconds_and_the_default_context(served, fake_engine) -> None:
    client = ha.make_client(URL, "ha-secret", **served)
    history = [ollama.Message(role="user", content="hi")]
    turn = await ha.chat_round(client, "gemma3:270m", history, None, keep_alive_seconds=600, num_ctx=4096)
    assert turn.content == "ok"
    expires = (await client.ps()).models[0].expires_at
    assert expires is not None and 550 < (expires - datetime.now(expires.tzinfo)).total_seconds() <= 600
    # Home Assistant's default num_ctx (8192) is more than the fake model's 4096: refused, naming both.
    with pytest.raises(ollama.ResponseError) as raised:
        await ha.chat_round(client, "gemma3:270m", history, None)
    assert raised.value.status_code == 400 and "8192" in raised.value.error and "4096" in raised.value.error


async def test_structured_output_as_home_assistants_ai_task_sends_it(served, fake_engine) -> None:
    client = ha.make_client(URL, "ha-secret", **served)
    schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    fake_engine.queue('{"color": "blue"}')
    turn = await ha.chat_round(client, "gemma3:270m", [ollama.Message(role="user", content="Sky color?")], None, num_ctx=4096, output_format=schema)
    assert turn.content == '{"color": "blue"}'
    assert fake_engine.compiled[-1].schema == schema
