from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError, load_settings, render_env_example

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting() -> None:
    committed = (ROOT / ".env.example").read_text()
    assert committed == render_env_example(), "regenerate with: python -m service.settings > .env.example"
    for name in Settings.model_fields:
        assert Settings.model_fields[name].description


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("JARVIS_INFERENCE_ENGINE", "tensorflow", "'llama_cpp', 'vllm', 'openai', 'auto' or 'fallback'"),
        ("JARVIS_PORT", "eighty", "valid integer"),
        ("JARVIS_CONTEXT_SIZE", "12", "greater than or equal to 256"),
        ("JARVIS_LOG_LEVEL", "LOUD", "DEBUG"),
        ("JARVIS_ALLOWED_HOSTS", "jarvis.lan,http://ha.lan", "give the host name alone"),
        ("JARVIS_CORS_ORIGINS", "ha.local:8123", "scheme://host[:port]"),
        ("JARVIS_BODY_TIMEOUT", "0", "greater than 0"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert message.startswith(f"{variable}={value!r} is invalid")
    assert says in message
    assert "\n" not in message


def test_environment_overrides_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JARVIS_PORT=9001\nJARVIS_HOST=0.0.0.0\nDEBUG=true\n")
    monkeypatch.setenv("JARVIS_PORT", "9002")
    settings = load_settings(_env_file=env_file)
    assert (settings.host, settings.port, settings.effective_log_level) == ("0.0.0.0", 9002, "DEBUG")


def test_main_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        cwd=tmp_path,
        env={"JARVIS_INFERENCE_ENGINE": "onnx", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: JARVIS_INFERENCE_ENGINE='onnx' is invalid")
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_lists_every_variable() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in ("JARVIS_INFERENCE_ENGINE", "JARVIS_MODEL_NAME", "JARVIS_API_KEY", "DEBUG"):
        assert name in result.stdout


def test_env_example_copied_to_dotenv_gives_the_defaults() -> None:
    from_example = load_settings(_env_file=ROOT / ".env.example")
    assert from_example == load_settings(_env_file=None)
