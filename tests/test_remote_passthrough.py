"""Fast tier: a remote model whose upstream takes only chat (flavour chat, as hosted APIs do): the
conversation is passed on (messages, tools, tool choice, output format) and the upstream's parsed
tool calls, reasoning and usage come back through every protocol. The upstream here is this
server's /v1/chat/completions over a fake engine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.remote_rig import remote_rig
from tests.test_api import CHAT, assert_error, sse_events

REGISTRY = (
    "models:\n"
    "  - {alias: local, engine: llama_cpp}\n"
    "  - {alias: hosted, engine: openai, model: jarvis, context_size: 4096,\n"
    "     options: {flavour: chat, api_key_env: HOSTED_KEY, upstreams: [{base_url: 'http://up-a/v1'}]}}\n"
)
TOOLS = [{"type": "function", "function": {"name": "turn_on", "parameters": {"type": "object", "properties": {"room": {"type": "string"}}}}}]
ASK = [{"role": "system", "content": "You are Jarvis."}, {"role": "user", "content": "Kitchen light on, please."}]


async def test_the_conversation_is_passed_on_and_the_answer_comes_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOSTED_KEY", "sk-hosted")
    async with remote_rig(tmp_path, ("up-a",), registry=REGISTRY) as rig:
        upstream = rig.upstreams["up-a"]
        upstream.queue("Done", ", sir.")
        answer = (await rig.client.post(CHAT, json={"model": "hosted", "messages": ASK, "max_tokens": 9, "temperature": 0.2, "seed": 3})).json()
        assert (answer["model"], answer["choices"][0]["message"]["content"], answer["choices"][0]["finish_reason"]) == ("hosted", "Done, sir.", "stop")
        # The upstream rendered its own template from the messages: they reached it as messages.
        assert "You are Jarvis." in upstream.prompts[-1] and "Kitchen light on, please." in upstream.prompts[-1]
        sampling = upstream.requests[-1].sampling
        assert (sampling.max_tokens, sampling.temperature, sampling.seed) == (9, 0.2, 3)
        # Usage is the upstream's count, not this server's estimate.
        assert answer["usage"]["prompt_tokens"] == len(upstream.requests[-1].prompt_token_ids)
        assert (await rig.client.post("/tokenize", json={"model": "hosted", "messages": ASK})).json()["count"] > 0
        upstream.queue("a", "b")
        events = sse_events(await rig.client.post(CHAT, json={"model": "hosted", "messages": ASK, "stream": True}))
        assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in events[:-1] if chunk["choices"]) == "ab"


async def test_tool_calls_and_json_output_are_the_upstreams(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",), registry=REGISTRY) as rig:
        upstream = rig.upstreams["up-a"]
        upstream.queue('{"name": "turn_on", "arguments": {"room": "kitchen"}}')
        first = (await rig.client.post(CHAT, json={"model": "hosted", "messages": ASK, "tools": TOOLS, "tool_choice": "required"})).json()
        choice = first["choices"][0]
        call = choice["message"]["tool_calls"][0]
        assert (choice["finish_reason"], call["function"]["name"], json.loads(call["function"]["arguments"])) == ("tool_calls", "turn_on", {"room": "kitchen"})
        assert upstream.compiled[-1].schema["properties"]["name"] == {"const": "turn_on"}  # forced where the upstream decodes
        upstream.queue("The light is on.")
        history = [*ASK, choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": '{"success": true}'}]
        second = (await rig.client.post(CHAT, json={"model": "hosted", "messages": history, "tools": TOOLS})).json()
        assert second["choices"][0]["message"]["content"] == "The light is on."
        assert '{"success": true}' in upstream.prompts[-1] and '"kitchen"' in upstream.prompts[-1]
        upstream.queue('{"on": true}')
        schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}
        fmt = {"type": "json_schema", "json_schema": {"name": "state", "schema": schema, "strict": True}}
        answer = (await rig.client.post(CHAT, json={"model": "hosted", "messages": ASK, "response_format": fmt})).json()
        assert json.loads(answer["choices"][0]["message"]["content"]) == {"on": True}
        assert upstream.compiled[-1].schema == {**schema, "additionalProperties": False}


async def test_other_protocols_and_what_a_chat_only_upstream_cannot_do(tmp_path: Path) -> None:
    async with remote_rig(tmp_path, ("up-a",), registry=REGISTRY) as rig:
        upstream = rig.upstreams["up-a"]
        upstream.queue('{"name": "turn_on", "arguments": {}}')
        tool = {"name": "turn_on", "input_schema": TOOLS[0]["function"]["parameters"]}
        message = (await rig.client.post("/v1/messages", json={
            "model": "hosted", "max_tokens": 32, "tools": [tool], "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "light"}],
        })).json()
        assert (message["stop_reason"], message["content"][-1]["name"], message["content"][-1]["input"]) == ("tool_use", "turn_on", {})
        upstream.queue("Bonjour")
        response = (await rig.client.post("/v1/responses", json={"model": "hosted", "input": "hi", "max_output_tokens": 4})).json()
        assert response["output"][0]["content"][0]["text"] == "Bonjour"
        assert_error(await rig.client.post(CHAT, json={"model": "hosted", "messages": ASK, "grammar": 'root ::= "a"'}), 400, says="no GBNF grammar")
        assert_error(await rig.client.post("/v1/completions", json={"model": "hosted", "prompt": [1, 2]}), 400, says="takes chat only")
