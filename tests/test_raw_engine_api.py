"""Fast tier: what lets another server drive this one as a raw engine (a remote model of flavour
jarvis), in vLLM's shapes: completions from token ids with `structured_outputs`, /tokenize with
`add_special_tokens` and `split_special_tokens`, /detokenize and /tokenizer_info."""

from __future__ import annotations

import pytest

from tests.test_api import assert_error

COMPLETIONS = "/v1/completions"


@pytest.mark.parametrize("prompt", [[72, 105, 1000], [[72, 105, 1000]]])
async def test_completions_from_token_ids(api, fake_engine, prompt) -> None:
    fake_engine.queue("ok")
    body = (await api.post(COMPLETIONS, json={"prompt": prompt, "max_tokens": 4})).json()
    assert body["choices"][0]["text"] == "ok" and body["usage"]["prompt_tokens"] == 3
    assert fake_engine.requests[-1].prompt_token_ids == [72, 105, 1000]
    assert fake_engine.tokenize_calls == []  # nothing to tokenize


async def test_token_ids_outside_the_vocabulary_are_a_400(api) -> None:
    assert_error(await api.post(COMPLETIONS, json={"prompt": [5, 2000]}), 400, param="prompt", says="outside the vocabulary (0 to 1999)")
    assert_error(await api.post(COMPLETIONS, json={"prompt": [-1]}), 400)


@pytest.mark.parametrize(
    ("fields", "kind", "expected"),
    [
        ({"structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "integer"}}}}}, "json_schema", {"type": "object", "properties": {"a": {"type": "integer"}}}),
        ({"structured_outputs": {"json": '{"type": "object"}'}}, "json_schema", {"type": "object"}),
        ({"structured_outputs": {"json_object": True}}, "json_schema", {"type": "object"}),
        ({"structured_outputs": {"grammar": 'root ::= "yes" | "no"'}}, "grammar", None),
        ({"response_format": {"type": "json_object"}}, "json_schema", {"type": "object"}),
        ({"grammar": 'root ::= "yes"'}, "grammar", None),
    ],
)
async def test_completions_take_every_constraint_field(api, fake_engine, fields, kind, expected) -> None:
    fake_engine.queue("{}")
    response = await api.post(COMPLETIONS, json={"prompt": [1, 2], "max_tokens": 4, **fields})
    assert response.status_code == 200, response.text
    compiled = fake_engine.compiled[-1]
    assert compiled.kind == kind
    if expected is not None:
        assert compiled.schema == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"structured_outputs": {"regex": "a+"}}, "structured_outputs.regex"),
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
        ({"structured_outputs": {"grammar": "root ::= x"}, "response_format": {"type": "json_object"}}, "structured_outputs"),
    ],
)
async def test_bad_constraint_fields_are_400s(api, fields, param) -> None:
    assert_error(await api.post(COMPLETIONS, json={"prompt": "x", **fields}), 400, param=param)


async def test_tokenize_and_detokenize_raw_text(api, fake_engine) -> None:
    text = "<start_of_turn>hi"
    plain = (await api.post("/tokenize", json={"prompt": text})).json()
    assert plain["tokens"] == [1000, 104, 105] and plain["max_model_len"] == 4096 and plain["prompt"] == text
    split = (await api.post("/tokenize", json={"prompt": text, "add_special_tokens": False, "split_special_tokens": True})).json()
    assert split["tokens"] == list(text.encode()) and split["count"] == len(text)
    assert fake_engine.tokenize_calls[-2:] == [(text, True, True), (text, False, False)]
    assert (await api.post("/detokenize", json={"tokens": [104, 105]})).json() == {"prompt": "hi"}
    assert_error(await api.post("/detokenize", json={"tokens": [99999]}), 400, param="prompt")


async def test_tokenizer_info_describes_the_model_for_a_remote_front(api) -> None:
    info = (await api.get("/tokenizer_info")).json()
    assert (info["eos_token"], info["model_max_length"], info["chat_template"]) == ("</s>", 4096, None)
    described = info["jarvis"]
    assert described["special_tokens"] == ["<end_of_turn>", "<start_of_turn>"]
    assert (described["architecture"], described["chat_format"], described["vocab_size"]) == ("gemma3", "gemma", 2000)
    assert described["capabilities"] == {"grammar": True, "embeddings": True}
