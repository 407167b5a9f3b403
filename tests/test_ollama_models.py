"""Fast tier: Ollama's model routes over the fake engine: /api/tags, /api/ps, /api/show and
/api/pull built from the registry and the model file (a GGUF header written here), model names
with and without tags, and the model-management routes this server does not offer."""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from service.model_facts import human_number, quantization_in_name
from tests.test_ollama_api import CHAT, assert_ollama_error, chat_body, ndjson


def write_gguf(path: Path, metadata: dict[str, object], tensors: dict[str, list[int]]) -> Path:
    """A GGUF header with these key/values (ints, strings, string lists) and tensor shapes; no data."""

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value.encode())) + value.encode()

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, value in metadata.items():
        out += text(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + text(value)
        elif isinstance(value, list):
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(text(item) for item in value)
        else:
            out += struct.pack("<II", 4, value)
    for name, dims in tensors.items():
        out += text(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", dim) for dim in dims) + struct.pack("<IQ", 0, 0)
    path.write_bytes(out + bytes(64))
    return path


@pytest.fixture
def gguf_model(tmp_path: Path) -> Path:
    return write_gguf(
        tmp_path / "tiny-chat.gguf",
        {"general.architecture": "gemma3", "general.file_type": 15, "gemma3.context_length": 32768, "tokenizer.ggml.tokens": ["a", "b"]},
        {"token_embd.weight": [640, 1000], "blk.0.attn_q.weight": [640, 640]},
    )


@pytest.fixture
async def gguf_api(app_factory, gguf_model: Path):
    app = await app_factory(model_name=str(gguf_model), model_alias="gemma3:270m,jarvis")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_tags_lists_every_name_with_file_facts(gguf_api, gguf_model: Path) -> None:
    models = (await gguf_api.get("/api/tags")).json()["models"]
    assert [model["name"] for model in models] == ["tiny-chat:latest", "gemma3:270m", "jarvis:latest"]
    for model in models:
        assert model["model"] == model["name"]
        assert model["size"] == gguf_model.stat().st_size
        assert model["digest"] == hashlib.sha256(gguf_model.read_bytes()).hexdigest()
        datetime.fromisoformat(model["modified_at"])
        assert model["details"] == {
            "parent_model": "",
            "format": "gguf",
            "family": "gemma3",
            "families": ["gemma3"],
            "parameter_size": "1.05M",  # 640 * 1000 + 640 * 640 parameters
            "quantization_level": "Q4_K_M",
        }


async def test_tags_reads_and_hashes_the_file_once(gguf_api, monkeypatch) -> None:
    from service import model_facts

    reads: list[Path] = []
    hashes: list[Path] = []
    read, sha256 = model_facts.read_gguf, model_facts._sha256
    monkeypatch.setattr(model_facts, "read_gguf", lambda path: reads.append(path) or read(path))
    monkeypatch.setattr(model_facts, "_sha256", lambda path: hashes.append(path) or sha256(path))
    for path in ("/api/tags", "/api/ps", "/api/tags", "/api/tags"):
        assert (await gguf_api.get(path)).status_code == 200
    assert len(reads) == 1 and len(hashes) == 1


async def test_ps_lists_the_loaded_model_with_its_expiry(gguf_api) -> None:
    (model,) = (await gguf_api.get("/api/ps")).json()["models"]
    assert model["name"] == "tiny-chat:latest" and model["size_vram"] == 0 and model["context_length"] == 4096
    assert datetime.fromisoformat(model["expires_at"]).year > 2200  # the registry keeps it loaded
    await gguf_api.post(CHAT, json=chat_body(model="jarvis", keep_alive="5m", stream=False))
    (model,) = (await gguf_api.get("/api/ps")).json()["models"]
    left = (datetime.fromisoformat(model["expires_at"]) - datetime.now(datetime.fromisoformat(model["expires_at"]).tzinfo)).total_seconds()
    assert 250 < left <= 300


async def test_show_gives_details_model_info_template_and_capabilities(gguf_api) -> None:
    data = (await gguf_api.post("/api/show", json={"model": "gemma3:270m"})).json()
    assert data["details"]["family"] == "gemma3" and data["details"]["quantization_level"] == "Q4_K_M"
    assert data["model_info"]["general.architecture"] == "gemma3"
    assert data["model_info"]["gemma3.context_length"] == 32768
    assert data["model_info"]["general.parameter_count"] == 640 * 1000 + 640 * 640
    assert "tokenizer.ggml.tokens" not in data["model_info"]
    assert "<start_of_turn>" in data["template"]
    assert data["capabilities"] == ["completion", "tools", "embedding"]
    assert "num_ctx 4096" in data["parameters"]


async def test_show_of_an_unknown_or_missing_model(gguf_api) -> None:
    assert_ollama_error(await gguf_api.post("/api/show", json={"model": "llama3.2"}), 404, "model 'llama3.2' not found")
    assert_ollama_error(await gguf_api.post("/api/show", json={}), 400, "model is required")


# ---- pull and model management ----------------------------------------------------------------


async def test_pull_of_a_registered_model_streams_progress_to_success(gguf_api, gguf_model: Path) -> None:
    lines = ndjson(await gguf_api.post("/api/pull", json={"model": "gemma3:270m"}))
    assert lines[0] == {"status": "pulling manifest"}
    layer = lines[1]
    assert layer["digest"] == "sha256:" + hashlib.sha256(gguf_model.read_bytes()).hexdigest()
    assert layer["total"] == layer["completed"] == gguf_model.stat().st_size
    assert lines[-1] == {"status": "success"}
    whole = await gguf_api.post("/api/pull", json={"model": "jarvis", "stream": False})
    assert whole.json() == {"status": "success"}


async def test_pull_of_anything_else_says_this_server_does_not_download(gguf_api) -> None:
    error = assert_ollama_error(await gguf_api.post("/api/pull", json={"model": "llama3.2:latest"}), 404, "does not download models")
    assert "models.yaml" in error and "gemma3:270m" in error


@pytest.mark.parametrize(
    ("method", "path", "says"),
    [
        ("POST", "/api/create", "does not create models"),
        ("POST", "/api/copy", "does not copy models"),
        ("DELETE", "/api/delete", "does not delete models"),
        ("POST", "/api/push", "does not push models"),
        ("POST", "/api/blobs/sha256:abc", "does not store blobs"),
    ],
)
async def test_model_management_gets_a_clear_error(api, method: str, path: str, says: str) -> None:
    assert_ollama_error(await api.request(method, path, json={"model": "x"}), 501, says)


async def test_names_with_and_without_tags_are_one_model(app_factory, tmp_path: Path) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text("models:\n  - {alias: small, engine: llama_cpp, aliases: ['gemma3:270m']}\n  - {alias: large, engine: llama_cpp}\n")
    app = await app_factory(models_file=models_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
        names = [model["name"] for model in (await api.get("/api/tags")).json()["models"]]
        assert names == ["small:latest", "gemma3:270m", "large:latest"]
        for name in ("small", "small:latest", "gemma3:270m"):
            assert (await api.post(CHAT, json=chat_body(model=name, stream=False))).status_code == 200
        assert_ollama_error(await api.post(CHAT, json=chat_body(model="gemma3")), 404, "model 'gemma3' not found")
        assert_ollama_error(await api.post(CHAT, json=chat_body(model="small:7b")), 404, "not found")


def test_parameter_sizes_and_quantization_names() -> None:
    assert [human_number(n) for n in (268_098_176, 8_000_000_000, 3_212_749_888, 500_000, 12)] == ["268.10M", "8B", "3.2B", "500K", "12"]
    assert quantization_in_name("qwen2.5-3b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert quantization_in_name("model-Q8_0.gguf") == "Q8_0"
    assert quantization_in_name("llama-f16.gguf") == "F16"
    assert quantization_in_name("plain.gguf") == ""
