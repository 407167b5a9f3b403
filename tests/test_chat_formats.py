"""Golden prompts: the exact text each format renders for one conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_formats import CHAT_FORMATS, ChatFormatError, TemplateRenderError, render_prompt, resolve_chat_format
from chat_formats.registry import ChatFormat

CONVERSATION = [
    {"role": "system", "content": "You are Jarvis. The kitchen light is off."},
    {"role": "user", "content": "Turn on the kitchen light."},
    {"role": "assistant", "content": "Done."},
    {"role": "user", "content": "Thanks!"},
]

GOLDEN = {
    "chatml": (
        "<|im_start|>system\nYou are Jarvis. The kitchen light is off.<|im_end|>\n"
        "<|im_start|>user\nTurn on the kitchen light.<|im_end|>\n"
        "<|im_start|>assistant\nDone.<|im_end|>\n"
        "<|im_start|>user\nThanks!<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are Jarvis. The kitchen light is off.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTurn on the kitchen light.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nDone.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nThanks!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": (
        "[INST] You are Jarvis. The kitchen light is off.\n\nTurn on the kitchen light. [/INST]"
        " Done.</s>"
        "[INST] Thanks! [/INST]"
    ),
    "gemma": (
        "<start_of_turn>user\nYou are Jarvis. The kitchen light is off.\n\nTurn on the kitchen light.<end_of_turn>\n"
        "<start_of_turn>model\nDone.<end_of_turn>\n"
        "<start_of_turn>user\nThanks!<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_prompt(name: str) -> None:
    assert render_prompt(CHAT_FORMATS[name], CONVERSATION, eos_token="</s>") == GOLDEN[name]


def test_every_registered_format_has_a_golden_prompt() -> None:
    assert set(CHAT_FORMATS) == set(GOLDEN)


def test_gemma_never_drops_a_system_message() -> None:
    only_system = render_prompt(CHAT_FORMATS["gemma"], [{"role": "system", "content": "House rules."}])
    assert only_system == "<start_of_turn>user\nHouse rules.<end_of_turn>\n<start_of_turn>model\n"


def test_without_generation_prompt() -> None:
    text = render_prompt(CHAT_FORMATS["chatml"], CONVERSATION[:2], add_generation_prompt=False)
    assert not text.endswith("<|im_start|>assistant\n")


def test_auto_prefers_the_embedded_template() -> None:
    chosen = resolve_chat_format("auto", "gemma3", "{{ messages[0]['content'] }}")
    assert chosen.name == "embedded"
    assert render_prompt(chosen, CONVERSATION) == CONVERSATION[0]["content"]


def test_auto_without_embedded_template_follows_the_architecture() -> None:
    assert resolve_chat_format("auto", "gemma3", None).name == "gemma"
    assert resolve_chat_format("auto", "qwen2", None).name == "chatml"


@pytest.mark.parametrize(("model_type", "expected"), [("gemma3_text", "gemma"), ("qwen2_moe", "chatml"), ("qwen3_moe", "chatml")])
def test_auto_knows_the_hf_model_type_too(model_type: str, expected: str) -> None:
    """vLLM reports the HF model_type, which differs from the GGUF name for some architectures."""
    assert resolve_chat_format("auto", model_type, None).name == expected


def test_auto_with_unknown_architecture_fails_clearly() -> None:
    with pytest.raises(ChatFormatError, match="JARVIS_CHAT_FORMAT"):
        resolve_chat_format("auto", "mystery", None)


def test_custom_template_file(tmp_path: Path) -> None:
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}>>")
    chosen = resolve_chat_format(str(template), "gemma3", None)
    assert render_prompt(chosen, CONVERSATION[:2]) == (
        "[system] You are Jarvis. The kitchen light is off.\n[user] Turn on the kitchen light.\n>>"
    )


def test_unknown_format_name_fails_clearly() -> None:
    with pytest.raises(ChatFormatError, match="neither a known format"):
        resolve_chat_format("chatgpt", "gemma3", None)


def test_templates_run_sandboxed() -> None:
    hostile = ChatFormat(name="hostile", template="{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateRenderError):
        render_prompt(hostile, CONVERSATION)


def test_template_raise_exception_becomes_a_render_error() -> None:
    strict = ChatFormat(name="strict", template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateRenderError, match="roles must alternate"):
        render_prompt(strict, CONVERSATION)


TOOL_CONVERSATION = [
    {"role": "system", "content": "You are Jarvis."},
    {"role": "user", "content": "Lights on."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "HassTurnOn", "arguments": {"area": "kitchen"}}}]},
    {"role": "tool", "tool_call_id": "c1", "name": "HassTurnOn", "content": "ok"},
]
TOOLS = [{"type": "function", "function": {"description": "Turn on", "name": "HassTurnOn", "parameters": {"properties": {"area": {"type": "string"}}, "type": "object"}}}]

# What each format must show the model: the definitions, the earlier call in its syntax, the result.
TOOL_SNIPPETS = {
    "chatml": ['<tools>\n{"type": "function", "function": {"description": "Turn on"', '<|im_start|>assistant\n<tool_call>\n{"name": "HassTurnOn", "arguments": {"area": "kitchen"}}\n</tool_call><|im_end|>', "<tool_response>\nok\n</tool_response>"],
    "llama3": ["You have access to the following functions", '{"name": "HassTurnOn", "parameters": {"area": "kitchen"}}<|eot_id|>', "<|start_header_id|>ipython<|end_header_id|>\n\nok<|eot_id|>"],
    "mistral": ['[AVAILABLE_TOOLS] [{"type": "function"', '[TOOL_CALLS] [{"name": "HassTurnOn", "arguments": {"area": "kitchen"}}]</s>', '[TOOL_RESULTS] {"content": "ok"} [/TOOL_RESULTS]'],
    "gemma": ["<start_of_turn>user\nYou are Jarvis.\n\nYou can call these functions:\n{", '<start_of_turn>model\n{"name": "HassTurnOn", "arguments": {"area": "kitchen"}}<end_of_turn>', "Tool result:\nok"],
}


@pytest.mark.parametrize("name", sorted(TOOL_SNIPPETS))
def test_tools_and_tool_history_render(name: str) -> None:
    prompt = render_prompt(CHAT_FORMATS[name], TOOL_CONVERSATION, tools=TOOLS, eos_token="</s>")
    for snippet in TOOL_SNIPPETS[name]:
        assert snippet in prompt, f"{name}: missing {snippet!r} in\n{prompt}"


@pytest.mark.parametrize("name", sorted(TOOL_SNIPPETS))
def test_tools_render_without_a_system_message(name: str) -> None:
    prompt = render_prompt(CHAT_FORMATS[name], TOOL_CONVERSATION[1:2], tools=TOOLS, eos_token="</s>")
    assert "HassTurnOn" in prompt and "Lights on." in prompt
