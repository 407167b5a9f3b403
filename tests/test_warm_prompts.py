"""Fast tier: warm prompts prefilled when a model loads (before it serves, or right after), a bad
warm-prompt file logged and skipped, and a model's default request priority."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.warm_prompts import WarmPromptError, read_warm_prompts
from tests.test_runtime_control import EngineShop, start_app, write

HOUSEHOLD = {"messages": [{"role": "system", "content": "You run the house."}, {"role": "user", "content": "hi"}],
             "tools": [{"type": "function", "function": {"name": "HassTurnOn", "parameters": {"type": "object", "properties": {}}}}]}


def registry(tmp_path: Path, **fields: object) -> Path:
    prompts = tmp_path / "warm.json"
    prompts.write_text(json.dumps([HOUSEHOLD]))
    extra = "".join(f", {key}: {value}" for key, value in fields.items())
    return write(tmp_path, f"models:\n  - {{alias: house, engine: llama_cpp, warm_prompts: {prompts}{extra}}}\n")


async def test_warm_prompts_are_prefilled_before_the_model_serves(tmp_path: Path) -> None:
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=registry(tmp_path))
    try:
        (_, _, engine) = shop.made[0]
        assert (await client.get("/health")).status_code == 200
        warm = engine.requests[0]
        assert warm.warm and warm.sampling.max_tokens == 1
        assert "You run the house." in engine.prompts[0] and "HassTurnOn" in engine.prompts[0]
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_after_ready_warm_prompts_run_once_the_model_serves(tmp_path: Path) -> None:
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=registry(tmp_path, warm_when="after_ready"))
    try:
        (_, _, engine) = shop.made[0]
        for _ in range(100):
            if engine.requests:
                break
            await asyncio.sleep(0.01)
        assert engine.requests[0].warm
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.mark.parametrize(("text", "says"), [("[{\"tools\": []}]", "non-empty messages"), ("not json", "cannot read"), ("[{\"messages\": [{\"content\": \"x\"}]}]", "missing")])
def test_a_bad_warm_prompt_file_is_refused_with_its_reason(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "warm.json"
    path.write_text(text)
    with pytest.raises(WarmPromptError, match=says):
        read_warm_prompts(path)


async def test_a_bad_warm_prompt_file_does_not_stop_the_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shop = EngineShop()
    path = registry(tmp_path)
    (tmp_path / "warm.json").write_text("not json")
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=path)
    try:
        assert (await client.get("/health")).status_code == 200
        assert "warm prompts" in caplog.text and "cannot read" in caplog.text
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_models_default_priority_applies_where_a_request_names_none(tmp_path: Path) -> None:
    shop = EngineShop()
    path = write(tmp_path, "models:\n  - {alias: voice, engine: llama_cpp, priority: 5}\n")
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=path)
    try:
        body = {"model": "voice", "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**body, "priority": -1})).status_code == 200
        (_, _, engine) = shop.made[0]
        assert [request.priority for request in engine.requests] == [5, -1]
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
