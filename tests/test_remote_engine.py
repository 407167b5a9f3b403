"""Fast tier: a remote model (engine kind openai) whose upstreams are this server over fake
engines, in process: the same prompt as a local model, every protocol, constraints and stop
strings, routing (least busy, a conversation kept on its upstream), an upstream failing before the
first token (tried elsewhere, taken out, back once healthy) or after it (an error event), the
fallback model, refusals as 400s, status and metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from backends.base import EngineError
from service import model_manager
from tests.remote_rig import ADMIN, remote_registry, remote_rig, upstream_states, wait_for
from tests.test_api import CHAT, assert_error, sse_events

MESSAGES = [{"role": "system", "content": "You are Jarvis."}, {"role": "user", "content": "Say <start_of_turn> hi"}]
TOOLS = [{"type": "function", "function": {"name": "turn_on", "parameters": {"type": "object", "properties": {"room": {"type": "string"}}}}}]


async def test_remote_chat_gives_the_upstream_the_prompt_a_local_model_would_see(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        rig.upstreams["up-a"].queue("Hello", " there")
        body = {"model": "remote", "messages": MESSAGES, "max_tokens": 8, "temperature": 0, "top_k": 5, "seed": 7}
        answer = (await rig.client.post(CHAT, json=body)).json()
        assert (answer["model"], answer["choices"][0]["message"]["content"], answer["choices"][0]["finish_reason"]) == ("remote", "Hello there", "stop")
        local = (await rig.client.post("/tokenize", json={"model": "local", "messages": MESSAGES})).json()
        sent = rig.upstreams["up-a"].requests[-1]
        # The template's turn markers are special tokens; the user's "<start_of_turn>" stays text.
        assert sent.prompt_token_ids == local["tokens"] and local["tokens"].count(1000) == 2
        assert answer["usage"]["prompt_tokens"] == len(local["tokens"])
        sampling = sent.sampling
        assert (sampling.temperature, sampling.top_k, sampling.seed, sampling.max_tokens) == (0, 5, 7, 8)
        remote = (await rig.client.post("/tokenize", json={"model": "remote", "messages": MESSAGES})).json()
        assert (remote["tokens"], remote["prompt"]) == (local["tokens"], local["prompt"])


async def test_remote_stream_with_usage(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        rig.upstreams["up-a"].queue("a", "b", "c")
        response = await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
        events = sse_events(response)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]) == "abc"
        assert [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]][-1] == "stop"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_forced_tool_call_and_json_schema_are_constrained_by_the_upstream(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        upstream = rig.upstreams["up-a"]
        upstream.queue('{"name": "turn_on", ', '"arguments": {"room": "kitchen"}}')
        body = {"model": "remote", "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"}
        choice = (await rig.client.post(CHAT, json=body)).json()["choices"][0]
        call = choice["message"]["tool_calls"][0]["function"]
        assert (choice["finish_reason"], call["name"], json.loads(call["arguments"])) == ("tool_calls", "turn_on", {"room": "kitchen"})
        assert upstream.compiled[-1].schema["properties"]["name"] == {"const": "turn_on"}
        schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}
        upstream.queue('{"on": true}')
        format_ = {"type": "json_schema", "json_schema": {"name": "state", "schema": schema}}
        answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "response_format": format_})).json()
        assert json.loads(answer["choices"][0]["message"]["content"]) == {"on": True}
        assert upstream.compiled[-1].schema == schema


async def test_stop_strings_token_prompts_and_other_protocols_on_a_remote_model(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        upstream = rig.upstreams["up-a"]
        upstream.queue("Hello", " world", " STOP", " more")
        answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "stop": ["STOP"]})).json()
        assert (answer["choices"][0]["message"]["content"], answer["choices"][0]["finish_reason"]) == ("Hello world ", "stop")
        completion = (await rig.client.post("/v1/completions", json={"model": "remote", "prompt": [5, 6, 7], "max_tokens": 2})).json()
        assert upstream.requests[-1].prompt_token_ids == [5, 6, 7] and completion["model"] == "remote"
        upstream.queue("Bonjour")
        response = (await rig.client.post("/v1/responses", json={"model": "remote", "input": "hi", "max_output_tokens": 4})).json()
        assert (response["status"], response["output"][0]["content"][0]["text"]) == ("completed", "Bonjour")
        upstream.queue("Hallo")
        message = (await rig.client.post("/v1/messages", json={"model": "remote", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})).json()
        assert (message["type"], message["content"][0]["text"], message["stop_reason"]) == ("message", "Hallo", "end_turn")
        counted = (await rig.client.post("/v1/messages/count_tokens", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})).json()
        assert counted["input_tokens"] > 0


async def test_a_conversation_stays_on_its_upstream_and_new_work_goes_to_the_least_busy(tmp_path: Path) -> None:
    async with remote_rig(tmp_path) as rig:
        for _ in range(3):
            await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "user": "alice"})
        used = [host for host in rig.upstreams if rig.hosts.completions_on(host)]
        assert len(used) == 1 and rig.hosts.completions_on(used[0]) == 3
        for engine in rig.upstreams.values():
            engine.delay = 0.05
            engine.queue("a", "b", "c")
        before = {host: rig.hosts.completions_on(host) for host in rig.upstreams}
        plain = [{"role": "user", "content": "no system prompt, no user: nothing to keep together"}]
        await asyncio.gather(*(rig.client.post(CHAT, json={"model": "remote", "messages": plain}) for _ in range(2)))
        assert {host: rig.hosts.completions_on(host) - before[host] for host in rig.upstreams} == {"up-a": 1, "up-b": 1}


async def test_a_failure_before_the_first_token_goes_to_another_upstream(tmp_path: Path) -> None:
    async with remote_rig(tmp_path) as rig:
        rig.hosts.broken["up-a"] = 500
        rig.upstreams["up-b"].queue("served")
        answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})).json()
        assert answer["choices"][0]["message"]["content"] == "served"
        assert (rig.hosts.completions_on("up-a"), rig.hosts.completions_on("up-b")) == (1, 1)
        assert await upstream_states(rig) == {"up-a": False, "up-b": True}
        del rig.hosts.broken["up-a"]
        await wait_for(lambda: _healthy(rig, "up-a"))
        status = (await rig.client.get("/admin/status", headers=ADMIN)).json()
        upstream_a = status["models"][1]["engine_stats"]["upstreams"][0]
        assert upstream_a["failures"] == 1 and "the engine core died" in upstream_a["last_error"]


async def _healthy(rig, host: str) -> bool:  # type: ignore[no-untyped-def]
    return (await upstream_states(rig))[host]


async def test_all_upstreams_down_the_fallback_answers_and_says_why(tmp_path: Path) -> None:
    async with remote_rig(tmp_path) as rig:
        await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})  # loads it
        rig.hosts.down |= {"up-a", "up-b"}
        rig.local.queue("local answer")
        answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})).json()
        assert (answer["model"], answer["choices"][0]["message"]["content"]) == ("local", "local answer")
        status = (await rig.client.get("/admin/status", headers=ADMIN)).json()
        remote = next(model for model in status["models"] if model["alias"] == "remote")
        assert remote["last_fallback"]["to"] == "local" and "up-a" in remote["last_fallback"]["reason"]
        metrics = (await rig.client.get("/metrics")).text
        assert 'jarvis_model_fallbacks_total{fallback="local",model="remote"} 1.0' in metrics
        assert 'jarvis_upstream_up{model="remote",upstream="up-a"} 0.0' in metrics


async def test_a_remote_model_that_cannot_load_falls_back_and_loads_once_an_upstream_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_manager, "REMOTE_RETRY_SECONDS", 0.1)
    async with remote_rig(tmp_path) as rig:
        rig.hosts.down |= {"up-a", "up-b"}
        first = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})).json()
        assert first["model"] == "local"
        rig.hosts.down.clear()
        await asyncio.sleep(0.2)

        async def served_remotely() -> bool:
            answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})).json()
            return answer["model"] == "remote"

        await wait_for(served_remotely)


async def test_no_upstream_and_no_fallback_is_a_503_naming_each_upstream(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, registry=remote_registry(("up-a", "up-b"), fallback=False)) as rig:
        await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})  # loads it
        rig.hosts.down |= {"up-a", "up-b"}
        error = assert_error(await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES}), 503)
        assert error["code"] == "upstream_unavailable" and "up-a" in error["message"] and "up-b" in error["message"]
        anthropic = await rig.client.post("/v1/messages", json={"model": "remote", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert anthropic.status_code == 503 and anthropic.json()["type"] == "error"


async def test_an_upstream_refusal_is_a_400_and_a_cut_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        schema = {"type": "object", "x-uncompilable": True}
        format_ = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        error = assert_error(await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "response_format": format_}), 400)
        assert "the fake engine cannot compile this" in error["message"]
        rig.upstreams["up-a"].queue("partial", EngineError("the decode loop died"))  # type: ignore[arg-type]
        response = await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "stream": True})
        events = sse_events(response)
        assert "partial" in json.dumps(events[1])
        assert "[DONE]" not in events and "cut" in events[-1]["error"]["message"]


async def test_status_and_metrics_per_upstream(tmp_path: Path) -> None:
    async with remote_rig(tmp_path) as rig:
        await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES, "user": "bob"})
        status = (await rig.client.get("/admin/status", headers=ADMIN)).json()
        upstreams = status["models"][1]["engine_stats"]["upstreams"]
        assert [(upstream["name"], upstream["flavour"], upstream["healthy"]) for upstream in upstreams] == [("up-a", "jarvis", True), ("up-b", "jarvis", True)]
        assert sum(upstream["requests"] for upstream in upstreams) == 1
        assert any(upstream["ttft_seconds"] is not None for upstream in upstreams)
        metrics = (await rig.client.get("/metrics")).text
        for name in ("jarvis_upstream_up", "jarvis_upstream_in_flight", "jarvis_upstream_requests_total", "jarvis_upstream_failures_total"):
            assert f'{name}{{model="remote",upstream="up-b"}}' in metrics


async def test_a_tokenizer_file_that_is_not_the_upstreams_model_is_refused(tmp_path: Path) -> None:
    from tests.upstream_servers import packaged_model

    registry = remote_registry(("up-a",), options=f", tokenizer: '{packaged_model()}'")
    async with remote_rig(tmp_path, ("up-a",), registry=registry) as rig:
        answer = (await rig.client.post(CHAT, json={"model": "remote", "messages": MESSAGES})).json()
        assert answer["model"] == "local"  # the remote model did not load: its fallback served
        status = (await rig.client.get("/admin/status", headers=ADMIN)).json()
        remote = next(model for model in status["models"] if model["alias"] == "remote")
        assert remote["state"] == "failed" and "does not tokenize as the upstream does" in remote["failure"]


async def test_embeddings_of_a_remote_model_are_the_upstreams(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",)) as rig:
        remote = (await rig.client.post("/v1/embeddings", json={"model": "remote", "input": ["kitchen", "garden"]})).json()
        direct = await rig.upstreams["up-a"].embed(["kitchen", "garden"])
        assert [row["embedding"] for row in remote["data"]] == direct and remote["model"] == "remote"
        assert remote["usage"]["prompt_tokens"] == len("kitchen") + len("garden")  # counted by the upstream's tokenizer
