"""Real tier: the packaged gemma model on each engine (llama.cpp, and vLLM on CPU), through the
official `openai` client against a live server on 127.0.0.1. The model is the base (not instruction-tuned) gemma-3-270m, so tests
check behaviour, not the wisdom of its answers."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.while_streaming import while_a_stream_runs

pytestmark = pytest.mark.real

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant in a smart home."},
    {"role": "user", "content": "Write a short story about a lighthouse keeper."},
]


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.api_url, api_key="anything", max_retries=0, timeout=120)


LOADING_STAGES = {
    "starting", "waiting to load", "preparing model", "loading model", "warming up",  # both engines
    "preparing GGUF for vLLM", "importing vLLM", "loading model in vLLM",  # vLLM (and "converting ..." once)
}


def test_health_was_503_with_a_stage_then_200(live_server) -> None:
    statuses = [status for status, _ in live_server.health_history]
    assert statuses[-1] == 200
    assert 503 in statuses, f"health never reported loading: {statuses}"
    stages = {body["stage"] for status, body in live_server.health_history if status == 503}
    assert stages, statuses
    assert all(stage in LOADING_STAGES or stage.startswith("convert") for stage in stages), stages


def test_models_lists_the_loaded_model_and_alias(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["gemma-3-270m-q4_k_m", "jarvis"]


def test_whole_chat_answer(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="jarvis", messages=MESSAGES, max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage.completion_tokens <= 12
    assert response.usage.prompt_tokens > 10
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def warm_up(client: openai.OpenAI, **request: object) -> None:
    """Run a request once so that the comparisons after it all start from the same prompt cache.
    Greedy decoding is reproducible for one cache state; a prefix computed in another batch
    shape gives logits that differ in the last bits, which can flip a near tie late in an answer
    (llama.cpp's own server and vLLM's prefix cache behave the same)."""
    create = client.chat.completions.create if "messages" in request else client.completions.create
    create(model="x", temperature=0, **{**request, "max_tokens": 1})


def test_greedy_stream_joins_to_the_whole_answer(client: openai.OpenAI) -> None:
    warm_up(client, messages=MESSAGES)
    whole = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model="x", messages=MESSAGES, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    content_chunks = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(content_chunks) > 3, "the answer should arrive token by token"
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="x", messages=MESSAGES, max_completion_tokens=3, temperature=0)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_text_completion_whole_and_streamed(client: openai.OpenAI) -> None:
    warm_up(client, prompt="The capital of France is")
    whole = client.completions.create(model="x", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert whole.choices[0].text.strip()
    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model="x", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
        )
        if chunk.choices
    )
    assert streamed == whole.choices[0].text


def test_stop_string_ends_the_answer_and_is_not_sent(client: openai.OpenAI) -> None:
    prompt = "Here is a list of fruits: apple, banana,"
    warm_up(client, prompt=prompt)
    free = client.completions.create(model="x", prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    assert len(free) > 8
    stop = free[len(free) // 2 : len(free) // 2 + 3]  # lands inside the answer, likely across tokens
    cut = free.index(stop)
    for stream in (False, True):
        if stream:
            text = "".join(
                chunk.choices[0].text
                for chunk in client.completions.create(model="x", prompt=prompt, max_tokens=24, temperature=0, stop=[stop], stream=True)
                if chunk.choices
            )
        else:
            response = client.completions.create(model="x", prompt=prompt, max_tokens=24, temperature=0, stop=stop)
            assert response.choices[0].finish_reason == "stop"
            text = response.choices[0].text
        assert text == free[:cut]
        assert stop not in text


def test_prompt_over_the_context_is_400_with_both_numbers(client: openai.OpenAI) -> None:
    too_long = [{"role": "user", "content": "lamp " * 3000}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="x", messages=too_long, max_tokens=5)
    message = raised.value.body["message"]
    assert "2048" in message and "tokens" in message
    assert raised.value.body["code"] == "context_length_exceeded"
    # still serving
    assert client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=2).choices


def test_invalid_parameter_is_400_and_server_keeps_serving(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="x", messages=MESSAGES, temperature=-1)
    assert raised.value.body["param"] == "temperature"
    assert client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=2).choices


def test_models_answers_while_a_long_stream_runs(live_server, client: openai.OpenAI) -> None:
    """/v1/models and /health answer while the server generates a long stream. "While" is the
    server's own count of running sequences, asked after both answered (see while_streaming): on a
    loaded machine vLLM's tokens can reach the client in bursts, so the chunks a client sees say little."""

    def ask_models_and_health(stream: openai.Stream) -> tuple[httpx.Response, httpx.Response]:
        with httpx.Client(timeout=30) as http:
            return http.get(f"{live_server.api_url}/models"), http.get(f"{live_server.base_url}/health")

    models, health = while_a_stream_runs(live_server, client, ask_models_and_health)
    assert models.status_code == 200 and models.json()["data"], models.text
    assert health.status_code == 200, health.text


def test_prompt_plus_max_tokens_over_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=2040)
    message = raised.value.body["message"]
    assert "2048" in message and "2040" in message


def test_a_repeated_prefix_is_reported_as_cached_tokens(client: openai.OpenAI) -> None:
    house = "The house has these devices: " + " ".join(f"lamp {n} in room {n % 7} is off." for n in range(60))
    first = client.chat.completions.create(
        model="x", messages=[{"role": "system", "content": house}, {"role": "user", "content": "Turn on lamp 3."}], max_tokens=2, user="a"
    )
    second = client.chat.completions.create(
        model="x", messages=[{"role": "system", "content": house}, {"role": "user", "content": "Turn off lamp 5."}], max_tokens=2, user="a"
    )
    assert first.usage.prompt_tokens > 300
    cached = second.usage.prompt_tokens_details.cached_tokens
    # llama.cpp reuses the exact common prefix; vLLM whole KV blocks of it (128 tokens on this CPU).
    assert second.usage.prompt_tokens * 0.5 < cached < second.usage.prompt_tokens


def test_four_concurrent_streams_all_complete(client: openai.OpenAI) -> None:
    results: list[tuple[str, str | None]] = [("", None)] * 4

    def consume(index: int) -> None:
        stream = client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": f"Tell story number {index}."}], max_tokens=24, temperature=0, stream=True
        )
        text, finish = "", None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        results[index] = (text, finish)

    workers = [threading.Thread(target=consume, args=(index,)) for index in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert all(finish in {"stop", "length"} for _, finish in results), results
    assert sum(bool(text.strip()) for text, _ in results) >= 3, results
