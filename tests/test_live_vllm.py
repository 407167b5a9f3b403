"""Real tier: what is particular to the vLLM engine (vLLM CPU build, the packaged model converted
from GGUF), and agreement between the two engines. The common API behaviour is in
test_live_chat.py and test_live_tools.py, which run on both engines."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import LiveServer, start_live_server, stop_live_server
from tests.while_streaming import while_a_stream_runs

pytestmark = [pytest.mark.real, pytest.mark.vllm]

CONVERSATION = [
    {"role": "system", "content": "You are the voice assistant of a smart home."},
    {"role": "user", "content": "Is the kitchen light on?"},
    {"role": "assistant", "content": "Yes, it is on."},
    {"role": "user", "content": "Turn it off, please."},
]
PROMPTS = ["The capital of France is", "Once upon a time, there was a", "def fibonacci(n):"]
AGREEMENT_PROMPTS = [
    "The capital of France is", "Once upon a time, there was a", "def fibonacci(n):", "The weather today is",
    "My favourite colour is", "1, 2, 3, 4,", "The quick brown fox", "In 1492, Columbus", "Water boils at",
    "The kitchen light is", "import numpy as", "Dear Sir or Madam,",
]


@pytest.fixture(scope="module")
def client(vllm_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_server.api_url, api_key="x", max_retries=0, timeout=300)


def test_a_stream_arrives_in_pieces_while_vllm_generates_and_closing_it_aborts_inside_vllm(
    vllm_server: LiveServer, client: openai.OpenAI,
) -> None:
    """Deltas reach the client while vLLM still holds the request, and join to the text. On a
    loaded machine vLLM's processes can hold tokens back for a second or two and vLLM then merges
    the waiting deltas, so this reads the first pieces and then asks vLLM's own count of running
    requests (see while_streaming), not a chunk per token. The model cannot end the stream, so only
    an abort inside vLLM brings the count back to 0 once the client closes it."""

    def first_pieces(stream: openai.Stream) -> list[str]:
        texts: list[str] = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                texts.append(chunk.choices[0].text)
            if len(texts) == 5:
                break
        return texts

    pieces = while_a_stream_runs(vllm_server, client, first_pieces)
    joined, counting_on = "".join(pieces), " 13, 14, 15, 16, 17, 18, 19, 20,"
    assert joined[: len(counting_on)] == counting_on[: len(joined)], f"the pieces joined: {joined[:80]!r}"
    assert client.completions.create(model="x", prompt=PROMPTS[0], max_tokens=2, temperature=0).choices[0].finish_reason == "length"


def test_a_schema_that_admits_no_output_is_400_on_vllm_not_an_empty_answer(vllm_server: LiveServer) -> None:
    """{"$ref": "#"} is a valid JSON schema that no value matches: vLLM's grammar masks every token
    and vLLM ends the request with "error". That is the request's fault, said as such, streamed or not."""
    body = {
        "model": "x", "max_tokens": 8, "messages": [{"role": "user", "content": "Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "self", "schema": {"$ref": "#"}}},
    }
    answer = httpx.post(f"{vllm_server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "response_format"
    assert "no output matches it" in answer.json()["error"]["message"]
    streamed = httpx.post(f"{vllm_server.base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=120)
    assert streamed.status_code == 400, streamed.text
    assert "no output matches it" in streamed.json()["error"]["message"]


def test_one_conversation_gives_the_same_prompt_and_token_ids_on_both_engines(llama_server: LiveServer, vllm_server: LiveServer) -> None:
    results = []
    for server in (llama_server, vllm_server):
        for body in ({"messages": CONVERSATION}, {"prompt": "Hello, world! Ünïcödé and <start_of_turn> tokens."}):
            response = httpx.post(f"{server.base_url}/tokenize", json=body, timeout=30)
            assert response.status_code == 200, response.text
            results.append(response.json())
    llama_chat, llama_raw, vllm_chat, vllm_raw = results
    assert llama_chat["prompt"] == vllm_chat["prompt"]
    assert llama_chat["prompt"].startswith("<start_of_turn>user\nYou are the voice assistant")
    assert llama_chat["tokens"] == vllm_chat["tokens"]
    assert llama_chat["tokens"][0] == 2, "BOS first, as llama.cpp adds it"
    assert llama_raw["tokens"] == vllm_raw["tokens"]


@pytest.fixture
def fresh_llama_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A llama.cpp server with nothing cached yet (it starts in seconds). Its greedy answers depend
    on its cache state: a prefix computed in another batch shape carries slightly different values
    and can flip a near tie ("Once upon a time, there was a" gave " small", " little" and " man"
    on the shared server as the suite went on). From a fresh start they are the same every time."""
    server = start_live_server(tmp_path, JARVIS_INFERENCE_ENGINE="llama_cpp", JARVIS_CONTEXT_SIZE="2048")
    yield server
    stop_live_server(server)


def test_greedy_output_of_both_engines_agrees_on_the_first_tokens(fresh_llama_server: LiveServer, vllm_server: LiveServer) -> None:
    """llama.cpp runs the Q4_K_M weights with its quantized kernels; vLLM runs the same weights
    dequantized to bf16. The logits differ slightly, so a greedy answer may take the other branch
    where two candidates are nearly tied. vLLM's answers here do not depend on what it served
    before (these prompts are shorter than one of its cache blocks); llama.cpp's come from a fresh
    server. Measured on these 12 prompts, 8 new tokens each: the first token agrees on 11, all 8
    tokens on 9, identically over three fresh servers. Tolerance, for other CPUs' kernels: at least
    9 first tokens and 7 whole answers agree."""
    tokenize_url = f"{fresh_llama_server.base_url}/tokenize"
    generated: dict[str, list[list[int]]] = {}
    for name, server in (("llama_cpp", fresh_llama_server), ("vllm", vllm_server)):
        engine_client = openai.OpenAI(base_url=server.api_url, api_key="x", max_retries=0, timeout=300)
        generated[name] = []
        for prompt in AGREEMENT_PROMPTS:
            text = engine_client.completions.create(model="x", prompt=prompt, max_tokens=8, temperature=0).choices[0].text
            # Token ids of prompt + answer, from one tokenizer (both engines share the ids).
            ids = httpx.post(tokenize_url, json={"prompt": prompt + text}, timeout=30).json()["tokens"]
            prompt_length = len(httpx.post(tokenize_url, json={"prompt": prompt}, timeout=30).json()["tokens"])
            generated[name].append(ids[prompt_length:])
    pairs = list(zip(generated["llama_cpp"], generated["vllm"]))
    first_agree = sum(a[:1] == b[:1] for a, b in pairs)
    all_agree = sum(a == b for a, b in pairs)
    assert first_agree >= 9 and all_agree >= 7, f"first token agrees on {first_agree}/12, whole answer on {all_agree}/12"


def test_embeddings_on_vllm_shape_norm_and_determinism(client: openai.OpenAI) -> None:
    texts = ["turn on the kitchen light", "what is the weather"]
    first = client.embeddings.create(model="x", input=texts)  # starts vLLM's pooling runner
    second = client.embeddings.create(model="x", input=texts)
    vectors = [item.embedding for item in first.data]
    assert [item.index for item in first.data] == [0, 1]
    assert len(vectors[0]) == len(vectors[1]) == 640  # gemma-3-270m's hidden size
    assert math.isclose(math.fsum(v * v for v in vectors[0]), 1.0, rel_tol=1e-3)
    assert vectors[0] != vectors[1]
    assert [item.embedding for item in second.data] == vectors
    assert first.usage.prompt_tokens > 0
