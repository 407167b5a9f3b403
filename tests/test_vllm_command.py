"""parse_vllm_command over every form people paste, and its errors."""

from __future__ import annotations

import pytest

from service.shell_words import split_words
from service.vllm_command import CommandParseError, parse_vllm_command

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EXPECTED_OPTIONS = {"max_model_len": 8192, "gpu_memory_utilization": 0.85}


@pytest.mark.parametrize(
    "command",
    [
        f"vllm serve {MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"/opt/venv/bin/vllm serve {MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"serve {MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"{MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"--model {MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"--model={MODEL} --max_model_len=8192 --gpu_memory_utilization=0.85",
        f"vllm serve \\\n  {MODEL} \\\n  --max-model-len 8k \\\n  --gpu-memory-utilization 0.85",
        f"vllm serve \\\r\n  {MODEL} \\\r\n  --max-model-len 8192 --gpu-memory-utilization .85\r\n",
        f"python -m vllm.entrypoints.openai.api_server --model {MODEL} --max-model-len 8192 --gpu-memory-utilization 0.85",
        f"$ vllm serve '{MODEL}' --max-model-len \"8192\" --gpu-memory-utilization 0.85  # comment",
    ],
)
def test_every_input_form_gives_the_same_entry(command: str) -> None:
    parsed = parse_vllm_command(command)
    assert parsed.entry == {
        "alias": "Qwen2.5-0.5B-Instruct",
        "engine": "vllm",
        "model": MODEL,
        "options": EXPECTED_OPTIONS if "8k" not in command else {**EXPECTED_OPTIONS, "max_model_len": 8000},
    }
    assert parsed.unmapped == []
    assert "JARVIS_INFERENCE_ENGINE=vllm" in parsed.env_lines
    assert f"JARVIS_MODEL_NAME={MODEL}" in parsed.env_lines
    assert "JARVIS_VLLM_GPU_MEMORY_UTILIZATION=0.85" in parsed.env_lines


def test_quoted_values_with_spaces_and_escapes() -> None:
    parsed = parse_vllm_command(
        "vllm serve \"/models/my model/x.gguf\" --chat-template '/templates/a b.jinja' --api-key \"s3 \\\"cret\\\"\" --served-model-name my\\ model other"
    )
    assert parsed.entry["model"] == "/models/my model/x.gguf"
    assert parsed.entry["chat_format"] == "/templates/a b.jinja"
    assert parsed.entry["alias"] == "my model"
    assert parsed.entry["aliases"] == ["other"]
    assert 'JARVIS_API_KEY="s3 \\"cret\\""' in parsed.env_lines
    assert 'JARVIS_MODEL_NAME="/models/my model/x.gguf"' in parsed.env_lines
    assert 'JARVIS_MODEL_ALIAS="my model,other"' in parsed.env_lines


def test_boolean_flags_and_their_negations() -> None:
    parsed = parse_vllm_command(
        f"vllm serve {MODEL} --enforce-eager --no-enable-prefix-caching --enable-auto-tool-choice --dtype bfloat16 -tp 2"
    )
    assert parsed.entry["options"] == {"enforce_eager": True, "enable_prefix_caching": False, "dtype": "bfloat16", "tensor_parallel_size": 2}
    assert parsed.entry["tool_support"] == "native"
    assert "JARVIS_VLLM_ENFORCE_EAGER=true" in parsed.env_lines
    assert "JARVIS_VLLM_ENABLE_PREFIX_CACHING=false" in parsed.env_lines
    assert parsed.entry == parse_vllm_command(
        f"vllm serve {MODEL} --enforce_eager=true --enable-prefix-caching=false --enable-auto-tool-choice --dtype=bfloat16 --tensor-parallel-size=2"
    ).entry


def test_unmapped_flags_are_returned_not_dropped() -> None:
    parsed = parse_vllm_command(
        f"CUDA_VISIBLE_DEVICES=0 VLLM_CPU_KVCACHE_SPACE=8 vllm serve --trust-remote-code {MODEL} --swap-space 4 "
        "--tool-call-parser hermes --kv-cache-dtype=fp8 --disable-log-requests --host 0.0.0.0 --port 9000"
    )
    assert parsed.entry["model"] == MODEL
    assert parsed.entry["options"] == {"cpu_kvcache_space_gb": 8.0}
    assert parsed.unmapped == [
        "CUDA_VISIBLE_DEVICES=0",
        "--trust-remote-code",
        "--swap-space 4",
        "--tool-call-parser hermes",
        "--kv-cache-dtype=fp8",
        "--disable-log-requests",
    ]
    assert "JARVIS_HOST=0.0.0.0" in parsed.env_lines
    assert "JARVIS_PORT=9000" in parsed.env_lines


def test_served_model_name_and_gguf_alias() -> None:
    assert parse_vllm_command("vllm serve /models/gemma-3-270m-q4_k_m.gguf").entry["alias"] == "gemma-3-270m-q4_k_m"
    parsed = parse_vllm_command(f"vllm serve {MODEL} --served-model-name jarvis")
    assert parsed.entry["alias"] == "jarvis"
    assert "JARVIS_MODEL_ALIAS=jarvis" in parsed.env_lines


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "empty"),
        ("vllm serve 'unterminated", "unterminated ' quote opened at line 1, column 12"),
        ('vllm serve m \\\n --dtype "half', 'unterminated " quote opened at line 2, column 10'),
        ("vllm serve m --max-model-len", "--max-model-len at line 1, column 14 needs a value"),
        ("vllm serve m --max-model-len lots", "--max-model-len expects a whole number"),
        ("vllm serve m --gpu-memory-utilization 1.5", "at most 1"),
        ("vllm serve m extra", "unexpected argument 'extra' at line 1, column 14"),
        ("vllm serve --dtype half", "no model"),
        ("vllm bench throughput", "only `vllm serve`"),
        ("vllm serve a --model b", "the model is given twice"),
        ("vllm serve m --enforce-eager=maybe", "is a switch"),
        ("vllm serve m trailing\\", "backslash ends the command"),
        ("vllm serve m --served-model-name", "needs at least one name"),
    ],
)
def test_errors_say_what_and_where(command: str, message: str) -> None:
    with pytest.raises(CommandParseError, match=None) as caught:
        parse_vllm_command(command)
    assert message in str(caught.value)


def test_shell_words_positions() -> None:
    words = split_words("a 'b c'\\\n  d\"e\\\"f\"")
    assert [(word.text, word.line, word.column) for word in words] == [("a", 1, 1), ("b c", 1, 3), ('de"f', 2, 3)]
