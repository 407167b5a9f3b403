"""Fast tier: the native Ollama API over the fake engine: chat, generate and embed shapes, NDJSON
framing, event order, options, keep_alive, and Ollama's error bodies (the model routes: test_ollama_models.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx
import pytest

from backends.base import EngineError
from protocols.ollama.generate import render_go_template
from protocols.ollama.wire import keep_alive_seconds, parse_duration
from service.errors import InvalidRequestError
from tests.test_tools_api import HOME_TOOLS

CHAT = "/api/chat"
GENERATE = "/api/generate"
USER = [{"role": "user", "content": "hi"}]
OLLAMA_TOOLS = [{"type": "function", "function": tool["function"]} for tool in HOME_TOOLS]


def chat_body(**fields: object) -> dict[str, object]:
    return {"model": "fake-model", "messages": USER, **fields}


def ndjson(response: httpx.Response) -> list[dict]:
    """Parse a stream strictly: one JSON object per line, every line ending in a newline, no blank lines."""
    assert response.headers["content-type"].startswith("application/x-ndjson")
    body = response.text
    assert body.endswith("\n")
    lines = body[:-1].split("\n")
    assert all(line.strip() for line in lines), body
    return [json.loads(line) for line in lines]


def assert_ollama_error(response: httpx.Response, status: int, says: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert says.lower() in body["error"].lower(), body["error"]
    return body["error"]


def assert_final_line(line: dict, done_reason: str = "stop") -> None:
    assert line["done"] is True and line["done_reason"] == done_reason
    for field in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(line[field], int) and line[field] >= 0, field
    assert line["total_duration"] >= line["prompt_eval_duration"] + line["eval_duration"]
    assert line["prompt_eval_count"] > 0


# ---- probes and listings --------------------------------------------------------------------


async def test_root_answers_as_ollama_and_shadows_no_route(api) -> None:
    for method in ("GET", "HEAD"):
        response = await api.request(method, "/")
        assert response.status_code == 200
    assert (await api.get("/")).text == "Ollama is running"
    assert (await api.get("/health")).status_code == 200
    assert (await api.get("/v1/models")).json()["object"] == "list"
    assert (await api.get("/metrics")).status_code == 200
    assert (await api.post("/tokenize", json={"prompt": "x"})).status_code == 200


async def test_version(api) -> None:
    response = await api.get("/api/version")
    assert response.status_code == 200 and isinstance(response.json()["version"], str)


# ---- chat -----------------------------------------------------------------------------------


async def test_chat_streams_ndjson_by_default(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    lines = ndjson(await api.post(CHAT, json=chat_body(model="fake-model:latest")))
    assert [line["message"] for line in lines[:-1]] == [{"role": "assistant", "content": "Hel"}, {"role": "assistant", "content": "lo"}]
    assert all(line["done"] is False and line["model"] == "fake-model:latest" for line in lines[:-1])
    assert lines[-1]["message"] == {"role": "assistant", "content": ""}
    assert_final_line(lines[-1])
    assert lines[-1]["eval_count"] == 2
    assert lines[-1]["prompt_eval_count"] == len(fake_engine.requests[0].prompt_token_ids)
    for line in lines:
        datetime.fromisoformat(line["created_at"])


async def test_chat_whole_answer(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    response = await api.post(CHAT, json=chat_body(stream=False))
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["message"] == {"role": "assistant", "content": "Hello"}
    assert_final_line(data)


async def test_num_predict_gives_done_reason_length(api, fake_engine) -> None:
    fake_engine.queue("a", "b", "c", "d")
    data = (await api.post(CHAT, json=chat_body(stream=False, options={"num_predict": 2}))).json()
    assert data["message"]["content"] == "ab"
    assert_final_line(data, "length")


async def test_options_reach_the_engine_with_ollama_defaults(api, fake_engine) -> None:
    await api.post(CHAT, json=chat_body(stream=False))
    defaults = fake_engine.requests[-1].sampling
    assert (defaults.temperature, defaults.top_p, defaults.top_k, defaults.min_p, defaults.repeat_penalty, defaults.seed) == (0.8, 0.9, 40, 0.0, 1.0, None)
    options = {"temperature": 0, "top_p": 0.5, "top_k": 7, "min_p": 0.1, "seed": 42, "num_predict": 9, "repeat_penalty": 1.3,
               "presence_penalty": 0.4, "frequency_penalty": 0.2, "num_ctx": 1024, "mirostat": 1, "num_gpu": 99}
    await api.post(CHAT, json=chat_body(stream=False, options=options))
    sampling = fake_engine.requests[-1].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p, sampling.seed, sampling.max_tokens) == (0, 0.5, 7, 0.1, 42, 9)
    assert (sampling.repeat_penalty, sampling.presence_penalty, sampling.frequency_penalty) == (1.3, 0.4, 0.2)


async def test_stop_option_ends_the_answer(api, fake_engine) -> None:
    fake_engine.queue("one", " two", " ST", "OP three")
    data = (await api.post(CHAT, json=chat_body(stream=False, options={"stop": ["STOP"]}))).json()
    assert data["message"]["content"] == "one two "


async def test_tools_give_whole_tool_calls_with_object_arguments(api, fake_engine) -> None:
    fake_engine.queue('{"name": "HassTurnOn", ', '"arguments": {"name": "kitchen light"}}')
    lines = ndjson(await api.post(CHAT, json=chat_body(tools=OLLAMA_TOOLS)))
    calls = [line["message"]["tool_calls"] for line in lines if "tool_calls" in line["message"]]
    assert len(calls) == 1 and len(calls[0]) == 1
    call = calls[0][0]
    assert call["function"] == {"index": 0, "name": "HassTurnOn", "arguments": {"name": "kitchen light"}}
    assert call["id"].startswith("call_")
    assert not any(line["message"]["content"] for line in lines)
    assert_final_line(lines[-1], "stop")


async def test_format_shaped_as_a_call_forces_that_tool(api, fake_engine) -> None:
    fake_engine.queue('{"name": "HassTurnOn", "arguments": {"area": "kitchen"}}')
    call_format = {"type": "object", "properties": {"name": {"const": "HassTurnOn"}, "arguments": {"type": "object"}}, "required": ["name", "arguments"]}
    data = (await api.post(CHAT, json=chat_body(tools=OLLAMA_TOOLS, format=call_format, stream=False))).json()
    schema = fake_engine.compiled[-1].schema
    assert schema["properties"]["name"] == {"const": "HassTurnOn"}
    arguments = schema["properties"]["arguments"]  # the tool's own parameters, not the format's
    assert set(arguments["properties"]) == {"name", "area", "domain"} and arguments["additionalProperties"] is False
    assert data["message"]["tool_calls"][0]["function"]["arguments"] == {"area": "kitchen"}


async def test_format_json_and_schema_constrain_the_answer(api, fake_engine) -> None:
    fake_engine.queue('{"a": 1}')
    data = (await api.post(CHAT, json=chat_body(format="json", stream=False))).json()
    assert json.loads(data["message"]["content"]) == {"a": 1}
    assert fake_engine.compiled[-1].schema == {"type": "object"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    fake_engine.queue('{"age": 22}')
    await api.post(CHAT, json=chat_body(format=schema, stream=False))
    assert fake_engine.compiled[-1].schema == schema


async def test_tool_round_trip_renders_the_call_and_its_result(api, fake_engine) -> None:
    messages = [
        {"role": "user", "content": "Turn on the kitchen light"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "HassTurnOn", "arguments": {"name": "kitchen"}}}]},
        {"role": "tool", "content": "light turned on", "tool_name": "HassTurnOn"},
    ]
    fake_engine.queue("Done.")
    data = (await api.post(CHAT, json=chat_body(messages=messages, tools=OLLAMA_TOOLS, stream=False))).json()
    assert data["message"]["content"] == "Done."
    prompt = fake_engine.prompts[-1]
    assert '{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}' in prompt
    assert "Tool result:\nlight turned on" in prompt


async def test_thinking_is_refused_where_the_model_cannot_think(api) -> None:
    assert_ollama_error(await api.post(CHAT, json=chat_body(think=True)), 400, '"fake-model" does not support thinking')
    assert_ollama_error(await api.post(CHAT, json=chat_body(think="high")), 400, "does not support thinking")
    assert (await api.post(CHAT, json=chat_body(think=False, stream=False))).status_code == 200


async def test_thinking_goes_to_message_thinking(app_factory, fake_engine) -> None:
    fake_engine._info = fake_engine._info.__class__(**{**fake_engine._info.__dict__, "architecture": "qwen3"})
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
        fake_engine.queue("<think>", "hmm", "</think>", "Yes")
        lines = ndjson(await api.post(CHAT, json=chat_body()))
        assert [line["message"].get("thinking") for line in lines if line["message"].get("thinking")] == ["hmm"]
        assert "".join(line["message"]["content"] for line in lines) == "Yes"
        fake_engine.queue("<think>", "hmm", "</think>", "Yes")
        data = (await api.post(CHAT, json=chat_body(think=False, stream=False))).json()
        assert data["message"] == {"role": "assistant", "content": "Yes"}


async def test_images_are_refused_without_a_vision_model(api) -> None:
    message = {"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}
    assert_ollama_error(await api.post(CHAT, json=chat_body(messages=[message])), 400, "no vision model")
    assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "x", "images": ["aGVsbG8="]}), 400, "no vision model")


async def test_num_ctx_above_the_loaded_context_is_refused_with_both_numbers(api) -> None:
    error = assert_ollama_error(await api.post(CHAT, json=chat_body(options={"num_ctx": 8192})), 400, "num_ctx")
    assert "8192" in error and "4096" in error
    assert (await api.post(CHAT, json=chat_body(stream=False, options={"num_ctx": 2048}))).status_code == 200


async def test_prompt_over_the_context_is_refused_with_both_numbers(app_factory, fake_engine) -> None:
    fake_engine._info = fake_engine._info.__class__(**{**fake_engine._info.__dict__, "context_length": 300})
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
        error = assert_ollama_error(await api.post(CHAT, json=chat_body(messages=[{"role": "user", "content": "x" * 400}])), 400, "300")
        assert "context" in error


async def test_error_after_the_first_line_is_a_last_error_line(api, fake_engine) -> None:
    fake_engine.queue("partial", EngineError("device lost"))
    lines = ndjson(await api.post(CHAT, json=chat_body()))
    assert lines[0]["message"]["content"] == "partial"
    assert set(lines[-1]) == {"error"} and "device lost" in lines[-1]["error"]
    assert (await api.post(CHAT, json=chat_body(stream=False))).status_code == 200


# ---- keep_alive -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3), (300, 300.0), ("0", 0.0), (0, 0.0), (-1, float("inf")), ("-1m", float("inf"))])
def test_keep_alive_values(value: object, seconds: float) -> None:
    assert keep_alive_seconds(value) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["abc", "5", "", "m", "5x"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


async def test_keep_alive_zero_unloads_after_the_answer(api, fake_engine) -> None:
    fake_engine.queue("ok")
    assert (await api.post(CHAT, json=chat_body(keep_alive=0, stream=False))).json()["message"]["content"] == "ok"
    for _ in range(100):
        if not (await api.get("/api/ps")).json()["models"]:
            break
        await asyncio.sleep(0.05)
    assert (await api.get("/api/ps")).json()["models"] == []
    assert fake_engine.closes == 1
    # The next request loads the model again, and without keep_alive the registry's applies (never).
    assert (await api.post(CHAT, json=chat_body(stream=False))).status_code == 200
    await asyncio.sleep(0.3)
    assert len((await api.get("/api/ps")).json()["models"]) == 1


async def test_empty_messages_load_or_unload(api, fake_engine) -> None:
    data = (await api.post(CHAT, json={"model": "fake-model", "messages": [], "keep_alive": 0})).json()
    assert data["done"] is True and data["done_reason"] == "unload" and data["message"] == {"role": "assistant", "content": ""}
    assert (await api.get("/api/ps")).json()["models"] == []
    data = (await api.post(CHAT, json={"model": "fake-model", "messages": []})).json()
    assert data["done_reason"] == "load"
    assert len((await api.get("/api/ps")).json()["models"]) == 1
    data = (await api.post(GENERATE, json={"model": "fake-model", "keep_alive": 0})).json()
    assert data["done_reason"] == "unload" and data["response"] == ""


async def test_bad_keep_alive_is_refused(api) -> None:
    assert_ollama_error(await api.post(CHAT, json=chat_body(keep_alive="soon")), 400, 'time: invalid duration "soon"')


# ---- generate ---------------------------------------------------------------------------------


async def test_generate_streams_response_lines(api, fake_engine) -> None:
    fake_engine.queue("Par", "is")
    lines = ndjson(await api.post(GENERATE, json={"model": "fake-model", "prompt": "The capital of France is", "system": "Be brief."}))
    assert [line["response"] for line in lines] == ["Par", "is", ""]
    assert_final_line(lines[-1])
    prompt = fake_engine.prompts[-1]
    assert prompt.startswith("<start_of_turn>user\nBe brief.\n\nThe capital of France is<end_of_turn>")


async def test_generate_raw_sends_the_prompt_as_is(api, fake_engine) -> None:
    fake_engine.queue("x")
    data = (await api.post(GENERATE, json={"model": "m", "prompt": "[INST] hi [/INST]", "raw": True, "stream": False})).json()
    assert data["response"] == "x" and data["done"] is True
    assert fake_engine.prompts[-1] == "[INST] hi [/INST]"
    assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "x", "raw": True, "system": "s"}), 400, "raw mode does not support template, system, or context")


async def test_generate_with_an_ollama_template(api, fake_engine) -> None:
    template = "{{ if .System }}SYSTEM: {{ .System }}\n{{ end }}USER: {{ .Prompt }}\nASSISTANT: {{ .Response }}</s>"
    await api.post(GENERATE, json={"model": "m", "prompt": "hi", "template": template, "stream": False})
    assert fake_engine.prompts[-1] == "USER: hi\nASSISTANT: "
    await api.post(GENERATE, json={"model": "m", "prompt": "hi", "system": "Be kind.", "template": template, "stream": False})
    assert fake_engine.prompts[-1] == "SYSTEM: Be kind.\nUSER: hi\nASSISTANT: "
    error = assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "x", "template": "{{ range .Messages }}{{ end }}"}), 400)
    assert "range .Messages" in error


def test_go_template_subset() -> None:
    values = {".System": "", ".Prompt": "p"}
    assert render_go_template("{{- if .System }}S{{ else }}N{{ end -}}  {{ .Prompt }}{{ .Response }}tail", values) == "Np"
    assert render_go_template("A {{- .Prompt }}", values) == "Ap"
    with pytest.raises(InvalidRequestError, match="without its"):
        render_go_template("{{ if .System }}x", values)


async def test_generate_refuses_what_this_server_cannot_do(api) -> None:
    assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "def f(", "suffix": "return x"}), 400, "does not support insert")
    assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "x", "context": [1, 2]}), 400, "context")
    assert_ollama_error(await api.post(GENERATE, json={"model": "m", "prompt": "x", "logprobs": True}), 400, "logprobs")


# ---- embeddings ----------------------------------------------------------------------------------


async def test_embed_gives_one_unit_vector_per_input(api) -> None:
    data = (await api.post("/api/embed", json={"model": "fake-model", "input": ["a", "b"]})).json()
    assert data["model"] == "fake-model" and len(data["embeddings"]) == 2
    assert all(sum(value * value for value in vector) == pytest.approx(1.0) for vector in data["embeddings"])
    assert data["prompt_eval_count"] == 2 and isinstance(data["total_duration"], int)
    single = (await api.post("/api/embed", json={"model": "fake-model", "input": "a"})).json()
    assert single["embeddings"] == data["embeddings"][:1]
    short = (await api.post("/api/embed", json={"model": "fake-model", "input": "a", "dimensions": 3})).json()
    assert len(short["embeddings"][0]) == 3 and sum(v * v for v in short["embeddings"][0]) == pytest.approx(1.0)


async def test_legacy_embeddings(api) -> None:
    vector = (await api.post("/api/embeddings", json={"model": "fake-model", "prompt": "a"})).json()["embedding"]
    embed = (await api.post("/api/embed", json={"model": "fake-model", "input": "a"})).json()["embeddings"][0]
    assert vector == embed
    assert (await api.post("/api/embeddings", json={"model": "fake-model", "prompt": ""})).json() == {"embedding": []}


# ---- names, errors and auth ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        (CHAT, {"messages": USER}, "model is required"),
        (CHAT, chat_body(options={"temperature": -1}), "options.temperature"),
        (CHAT, chat_body(options={"top_p": 2}), "options.top_p"),
        (CHAT, chat_body(options={"stop": [""]}), "must not be empty"),
        (CHAT, chat_body(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        (CHAT, chat_body(format="xml"), "format"),
        (CHAT, chat_body(think="very"), "think"),
        (CHAT, chat_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]), "must be a JSON Schema of type 'object'"),
        (CHAT, chat_body(messages=[{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]), "not valid JSON"),
        (CHAT, chat_body(format={"type": "object", "properties": 5}), "format"),
        (GENERATE, {"model": "m", "prompt": "x", "options": {"num_predict": "many"}}, "options.num_predict"),
        ("/api/embed", {"model": "m", "input": [1, 2]}, "input"),
        ("/api/embed", {"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ("/api/show", {"name": ""}, "model is required"),
        ("/api/embeddings", {"model": "m", "prompt": ["a"]}, "prompt"),
        ("/api/pull", {"stream": False}, "model is required"),
        ("/api/pull", {"model": "m", "stream": "sometimes"}, "stream"),
        (GENERATE, {"model": "m", "prompt": "x", "keep_alive": [5]}, "keep_alive"),
    ],
)
async def test_bad_input_gets_ollamas_error_body_and_the_server_keeps_serving(api, path: str, body: dict, says: str) -> None:
    assert_ollama_error(await api.post(path, json=body), 400, says)
    assert (await api.post(CHAT, json=chat_body(stream=False))).status_code == 200


async def test_malformed_json_and_unknown_routes(api) -> None:
    assert_ollama_error(await api.post(CHAT, content=b"{nope", headers={"content-type": "application/json"}), 400, "not valid JSON")
    assert_ollama_error(await api.get("/api/nothing"), 404, "unknown route")
    assert_ollama_error(await api.get(CHAT), 405, "not allowed")


async def test_inference_key_works_as_bearer_token(app_factory) -> None:
    app = await app_factory(api_key="secret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
        assert_ollama_error(await api.get("/api/tags"), 401, "api key")
        assert_ollama_error(await api.get("/api/ps", headers={"Authorization": "Bearer wrong"}), 401)
        assert (await api.get("/api/tags", headers={"Authorization": "Bearer secret"})).status_code == 200
        assert (await api.get("/")).text == "Ollama is running"  # the probe stays open, like /health


async def test_a_json_body_is_read_whatever_its_content_type(api, fake_engine) -> None:
    """Ollama's documentation uses `curl -d '{...}'`, which labels the body a form."""
    body = json.dumps(chat_body(stream=False)).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await api.post(CHAT, content=body, headers=headers)
        assert response.status_code == 200, response.text
