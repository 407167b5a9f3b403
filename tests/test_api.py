"""Fast tier: the HTTP and facade layers over the fake engine."""

from __future__ import annotations

import json

import httpx
import pytest

from backends.base import EngineError, EngineOverloadedError

CHAT = "/v1/chat/completions"


def chat_body(**fields: object) -> dict[str, object]:
    return {"model": "anything", "messages": [{"role": "user", "content": "hi"}], **fields}


def sse_events(response: httpx.Response) -> list[object]:
    """Parse a stream strictly: only `data:` lines separated by blank lines are allowed."""
    body = response.text
    assert body.endswith("\n\n")
    events: list[object] = []
    for block in body.split("\n\n")[:-1]:
        assert block.startswith("data: "), f"not a data line: {block!r}"
        assert "\n" not in block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def assert_error(response: httpx.Response, status: int, *, param: str | None = None, says: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says.lower() in error["message"].lower()
    if param is not None:
        assert error["param"] == param
    return error


# ---- whole responses ----------------------------------------------------------------------


async def test_chat_whole_response_shape_and_usage(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo")
    response = await api.post(CHAT, json=chat_body())
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert data["choices"][0]["finish_reason"] == "stop"
    prompt_tokens = len(fake_engine.requests[0].prompt_token_ids)
    assert data["usage"]["prompt_tokens"] == prompt_tokens
    assert data["usage"]["completion_tokens"] == 2
    assert data["usage"]["total_tokens"] == prompt_tokens + 2


async def test_unknown_fields_and_list_of_parts_content_are_accepted(api, fake_engine) -> None:
    body = chat_body(
        messages=[
            {"role": "system", "content": "You control the house.", "name": "setup"},
            {"role": "user", "content": [{"type": "text", "text": "Turn on "}, {"type": "text", "text": "the lights"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
            {"role": "function", "name": "x", "content": "done too"},
            {"role": "user", "content": "thanks"},
        ],
        user="kitchen",
        parallel_tool_calls=True,
        metadata={"a": 1},
        service_tier="auto",
        id_slot=3,
        typical_p=0.9,
        chat_template_kwargs={"enable_thinking": False},
    )
    response = await api.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    prompt = fake_engine.prompts[-1]
    assert "You control the house.\n\nTurn on the lights" in prompt  # gemma folds system into the user turn
    assert fake_engine.requests[-1].cache_key == "kitchen"


async def test_assistant_content_missing_null_or_empty(api) -> None:
    for content in ({}, {"content": None}, {"content": ""}):
        messages = [{"role": "user", "content": "a"}, {"role": "assistant", **content}, {"role": "user", "content": "b"}]
        response = await api.post(CHAT, json=chat_body(messages=messages))
        assert response.status_code == 200, response.text


async def test_sampling_fields_reach_the_engine(api, fake_engine) -> None:
    body = chat_body(temperature=0, top_p=0.5, top_k=7, min_p=0.1, seed=42, presence_penalty=0.5,
                     frequency_penalty=0.25, repeat_penalty=1.1, max_completion_tokens=9)
    assert (await api.post(CHAT, json=body)).status_code == 200
    sampling = fake_engine.requests[-1].sampling
    assert sampling.temperature == 0  # greedy is never replaced by a default
    assert (sampling.top_p, sampling.top_k, sampling.min_p, sampling.seed) == (0.5, 7, 0.1, 42)
    assert (sampling.presence_penalty, sampling.frequency_penalty, sampling.repeat_penalty) == (0.5, 0.25, 1.1)
    assert sampling.max_tokens == 9


async def test_default_max_tokens_comes_from_settings(app_factory, fake_engine) -> None:
    app = await app_factory(max_tokens=33)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
    assert fake_engine.requests[-1].sampling.max_tokens == 33


async def test_max_tokens_gives_finish_reason_length(api, fake_engine) -> None:
    fake_engine.queue("a", "b", "c", "d")
    data = (await api.post(CHAT, json=chat_body(max_tokens=2))).json()
    assert data["choices"][0]["message"]["content"] == "ab"
    assert data["choices"][0]["finish_reason"] == "length"


async def test_stop_string_split_across_deltas_never_reaches_client(api, fake_engine) -> None:
    fake_engine.queue("Hello ", "EN", "D", " after")
    data = (await api.post(CHAT, json=chat_body(stop="END"))).json()
    assert data["choices"][0]["message"]["content"] == "Hello "
    assert data["choices"][0]["finish_reason"] == "stop"
    assert fake_engine.closed_early == 1  # the engine was told to stop


async def test_text_completion_whole(api, fake_engine) -> None:
    fake_engine.queue(" Paris", ".")
    data = (await api.post("/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 5})).json()
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == " Paris."
    assert fake_engine.prompts[-1] == "The capital of France is"
    assert data["usage"]["completion_tokens"] == 2


# ---- streaming ----------------------------------------------------------------------------


async def test_chat_stream_chunks_follow_the_client_contract(api, fake_engine) -> None:
    fake_engine.queue("Hel", "lo", "!")
    response = await api.post(CHAT, json=chat_body(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({chunk["id"] for chunk in chunks}) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert {"id", "created", "model", "choices"} <= set(chunk)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    assert text == "Hello!"
    finish = chunks[-2]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-2])


async def test_stream_without_include_usage_has_no_usage_chunk(api, fake_engine) -> None:
    fake_engine.queue("x")
    events = sse_events(await api.post(CHAT, json=chat_body(stream=True)))
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in event for event in events[:-1])


async def test_completion_stream(api, fake_engine) -> None:
    fake_engine.queue(" a", " b")
    response = await api.post("/v1/completions", json={"prompt": "x", "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert "".join(event["choices"][0]["text"] for event in events[:-1] if event["choices"]) == " a b"
    assert events[-2]["usage"]["completion_tokens"] == 2


async def test_error_after_first_token_is_a_final_error_event(api, fake_engine) -> None:
    fake_engine.queue("partial", EngineError("device lost"))
    events = sse_events(await api.post(CHAT, json=chat_body(stream=True)))
    assert events[-1] != "[DONE]"
    assert "device lost" in events[-1]["error"]["message"]


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"temperature": -0.5}, "temperature", "greater than or equal"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", "input should be"),
        ({"n": 2}, "n", "less than or equal to 1"),
        ({"top_p": 1.5}, "top_p", ""),
        ({"stop": [""]}, "stop", "must not be empty"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None, ""),
    ],
)
async def test_invalid_parameters_get_400_naming_the_field(api, fields, param, says) -> None:
    assert_error(await api.post(CHAT, json=chat_body(**fields)), 400, param=param, says=says)


async def test_malformed_json_gets_400(api) -> None:
    response = await api.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert_error(response, 400, says="json")


async def test_non_object_body_gets_400(api) -> None:
    assert_error(await api.post(CHAT, content=b"[1, 2]", headers={"content-type": "application/json"}), 400)


async def test_unknown_route_gets_404_error_body(api) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, says="/v1/nothing-here")


async def test_prompt_over_the_context_gets_400_with_both_numbers(app_factory, fake_engine) -> None:
    fake_engine._info = fake_engine._info.__class__(**{**fake_engine._info.__dict__, "context_length": 64})
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        long = chat_body(messages=[{"role": "user", "content": "x" * 200}])
        error = assert_error(await client.post(CHAT, json=long), 400, says="64 tokens")
        assert error["code"] == "context_length_exceeded"
        assert str(len(fake_engine.tokenize(fake_engine.prompts[-1]))) in error["message"]
        streamed = await client.post(CHAT, json={**long, "stream": True})
        assert_error(streamed, 400, says="64 tokens")  # a real status, not a 200 stream
        fits_but_asks_too_much = chat_body(max_tokens=60)
        assert_error(await client.post(CHAT, json=fits_but_asks_too_much), 400, says="max_tokens")
        # the server keeps serving
        assert (await client.post(CHAT, json=chat_body(max_tokens=5))).status_code == 200
    assert not fake_engine.requests[:-1]  # nothing reached the engine for the rejected requests


async def test_engine_overloaded_gets_429_with_retry_after(api, fake_engine) -> None:
    fake_engine.fail_next(EngineOverloadedError("all 4 slots busy and the queue is full", retry_after_seconds=2))
    response = await api.post(CHAT, json=chat_body(stream=True))
    assert_error(response, 429, says="queue is full")
    assert response.headers["retry-after"] == "2"


async def test_api_key_required_when_configured(app_factory) -> None:
    app = await app_factory(api_key="sekret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.get("/v1/models"), 401, says="api key")
        assert_error(await client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer sekret"})).status_code == 200
        assert (await client.get("/v1/models", headers={"X-Api-Key": "sekret"})).status_code == 200
        assert (await client.get("/health")).status_code == 200  # health stays open


async def test_any_token_accepted_without_configured_key(api) -> None:
    assert (await api.get("/v1/models", headers={"Authorization": "Bearer whatever"})).status_code == 200


# ---- models and health ---------------------------------------------------------------------


async def test_models_list_has_id_and_aliases(app_factory) -> None:
    app = await app_factory(model_alias="jarvis, home")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        data = (await client.get("/v1/models")).json()
        assert data["object"] == "list"
        assert [card["id"] for card in data["data"]] == ["fake-model", "jarvis", "home"]
        assert all(card["object"] == "model" for card in data["data"])
        assert (await client.get("/v1/models/jarvis")).status_code == 200
        assert_error(await client.get("/v1/models/nope"), 404)


async def test_single_model_mode_serves_any_model_name(api, fake_engine) -> None:
    fake_engine.queue("ok")
    data = (await api.post(CHAT, json=chat_body(model="gpt-4o"))).json()
    assert data["model"] == "fake-model"


async def test_health_is_503_with_reason_until_loaded(fake_engine) -> None:
    import asyncio

    from server.app import create_app
    from service.gguf_client import GGUFClient
    from tests.conftest import make_settings

    release = asyncio.Event()
    original_start = fake_engine.start

    async def slow_start() -> None:
        await release.wait()
        await original_start()

    fake_engine.start = slow_start  # type: ignore[method-assign]
    settings = make_settings()
    app = create_app(settings, GGUFClient(settings, engine=fake_engine))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await asyncio.sleep(0.01)
        loading = await client.get("/health")
        assert loading.status_code == 503
        assert loading.json()["reason"] == "loading model"
        assert_error(await client.post(CHAT, json=chat_body()), 503, says="not ready")
        release.set()
        for _ in range(100):
            if (await client.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/health")).json()["status"] == "ok"


async def test_tokenize_prompt_and_chat(api, fake_engine) -> None:
    raw = (await api.post("/tokenize", json={"prompt": "hi there"})).json()
    assert raw["tokens"] == fake_engine.tokenize("hi there")
    assert raw["count"] == len(raw["tokens"]) and raw["max_model_len"] > 0
    chat = (await api.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})).json()
    assert chat["prompt"].startswith("<start_of_turn>user\nhi")
    assert chat["tokens"] == fake_engine.tokenize(chat["prompt"])


async def test_tokenize_needs_exactly_one_input(api) -> None:
    for body in ({}, {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}):
        response = await api.post("/tokenize", json=body)
        assert response.status_code == 400
        assert "exactly one of prompt" in response.json()["error"]["message"]
