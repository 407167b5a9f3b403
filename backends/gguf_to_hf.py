"""Turn a GGUF file into a Hugging Face folder (safetensors + tokenizer) that vLLM can load where it
cannot run the GGUF itself (vLLM on CPU). Done once per file: the folder lives in the cache,
is written under a temporary name and renamed when complete, and is reused afterwards.

The tokenizer transformers builds from a GGUF does not add BOS; llama.cpp adds it when the GGUF
says so (`tokenizer.ggml.add_bos_token`), and gemma without BOS degenerates. The folder keeps
llama.cpp's behaviour so the same text gives the same token ids on both engines."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = "jarvis-conversion.json"
FORMAT_VERSION = 1

Progress = Callable[[str], None]


class ConversionError(RuntimeError):
    pass


def converted_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the HF folder of `gguf_path` lives; the name changes when the file changes."""
    stat = gguf_path.stat()
    return cache_dir / "hf-from-gguf" / f"{gguf_path.stem}-{stat.st_size:x}-{stat.st_mtime_ns:x}"


def is_converted(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["format"] == FORMAT_VERSION
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_hf_folder(gguf_path: Path, cache_dir: Path, progress: Progress | None = None) -> Path:
    """The HF folder for `gguf_path`, converting it first when it is not in the cache yet."""
    report = progress or (lambda message: None)
    folder = converted_folder(gguf_path, cache_dir)
    if is_converted(folder):
        logger.info("using the converted model in %s", folder)
        return folder
    started = time.monotonic()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _convert(gguf_path, partial, report)
        (partial / MARKER).write_text(json.dumps({"format": FORMAT_VERSION, "source": str(gguf_path)}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    except Exception as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, ConversionError):
            raise
        raise ConversionError(f"cannot convert {gguf_path} for vLLM: {type(error).__name__}: {error}") from error
    report(f"converted {gguf_path.name} in {time.monotonic() - started:.0f} s")
    logger.info("converted %s into %s in %.0f s", gguf_path, folder, time.monotonic() - started)
    return folder


def gguf_adds_bos(gguf_path: Path) -> bool:
    """llama.cpp's rule: the file's `tokenizer.ggml.add_bos_token`, true when absent."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return True if field is None else bool(field.contents())


def _convert(gguf_path: Path, target: Path, report: Progress) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as error:
        raise ConversionError(
            f"converting a GGUF for vLLM needs transformers, gguf and accelerate ({error}); "
            "run ./run.sh with JARVIS_INFERENCE_ENGINE=vllm to install requirements-vllm.txt"
        ) from error
    source, name = str(gguf_path.parent), gguf_path.name
    adds_bos = gguf_adds_bos(gguf_path)
    report(f"converting {name} for vLLM (once; about a minute for a small model): tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    report(f"converting {name}: dequantizing the weights")
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    report(f"converting {name}: writing safetensors")
    model.save_pretrained(target, safe_serialization=True)
    # The setter rebuilds the tokenizer's post-processor, which is what adds (or not) the BOS.
    tokenizer.add_bos_token = adds_bos
    tokenizer.save_pretrained(target)
    _check_bos(target, adds_bos)


def _check_bos(folder: Path, adds_bos: bool) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer("x").input_ids
    has_bos = tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]
    if has_bos != adds_bos:
        raise ConversionError(f"the converted tokenizer in {folder} does not follow add_bos_token={adds_bos}")
