"""What a model's files say about it, for listings such as Ollama's /api/tags and /api/show: size,
modification time, format, GGUF metadata and a sha256 digest. Each fact is computed once per
file version (path, size, mtime) and cached: the header is read in a worker thread, the digest
is hashed in the background, and a listing never waits long for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.gguf_metadata import GGUFError, GGUFInfo, read_gguf
from service.model_files import model_location

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 8 * 1024 * 1024
_QUANTIZATION_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(IQ\d_(?:XXS|XS|S|M|NL)|Q\d_K(?:_[SML])?|Q\d_\d|TQ\d_0|MXFP4|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)


@dataclass(frozen=True)
class ModelFacts:
    path: Path | None  # None: not on this machine (a model hub id)
    format: str = ""  # gguf, safetensors, or "" when unknown
    size: int = 0  # bytes on disk
    modified: float | None = None  # Unix time of the last change
    digest: str = ""  # sha256 of the GGUF file, hex; "" until hashed, or for a folder
    architecture: str = ""
    quantization: str = ""
    parameter_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)  # GGUF key/values, arrays left out


def human_number(count: int) -> str:
    """A parameter count as Ollama writes it: 268.10M, 8B, 3.2B, 500K."""
    for scale, suffix, decimals in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{suffix}" if number == int(number) else f"{number:.{decimals}f}{suffix}"
    return f"{count / 1000:.0f}K" if count >= 1000 else str(count)


def quantization_in_name(name: str) -> str:
    match = _QUANTIZATION_IN_NAME.search(name)
    return match.group(1).upper() if match else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _file_facts(path: Path) -> ModelFacts:
    """Everything but the digest; runs in a worker thread (reading a GGUF header takes ~0.2 s)."""
    stat = path.stat()
    if path.is_dir():
        files = [item for item in path.rglob("*") if item.is_file()]
        config = _hf_config(path)
        return ModelFacts(
            path, "safetensors" if any(item.suffix == ".safetensors" for item in files) else "",
            sum(item.stat().st_size for item in files), max([stat.st_mtime, *(item.stat().st_mtime for item in files)]),
            architecture=str(config.get("model_type", "")), quantization=quantization_in_name(path.name),
            metadata={key: value for key, value in config.items() if isinstance(value, str | int | float | bool)},
        )
    header: GGUFInfo | None = None
    try:
        header = read_gguf(path)
    except (GGUFError, OSError, ValueError) as error:
        logger.warning("cannot read the GGUF header of %s: %s", path, error)
    return ModelFacts(
        path, "gguf" if header else "", stat.st_size, stat.st_mtime,
        architecture=(header.architecture if header else "") or "",
        quantization=(header.quantization if header else "") or quantization_in_name(path.name),
        parameter_count=header.parameter_count if header else 0,
        metadata={key: value for key, value in header.metadata.items() if not isinstance(value, list | dict)} if header else {},
    )


def _hf_config(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if isinstance(config, dict):
            return config
    return {}


class ModelFactsCache:
    """Facts per model file version, and digests hashed once in the background."""

    def __init__(self, cache_dir: Path, digest_wait_seconds: float = 2.0) -> None:
        self._cache_dir = cache_dir
        self._digest_wait = digest_wait_seconds
        self._facts: dict[tuple[str, int, int], ModelFacts] = {}
        self._digests: dict[tuple[str, int, int], asyncio.Task[str]] = {}

    async def facts(self, model_name: str) -> ModelFacts:
        """The facts of a registry entry's model (its `model` field; "" = the packaged model)."""
        path = model_location(model_name, self._cache_dir)
        if path is None:
            return ModelFacts(None)
        try:
            stat = path.stat()
        except OSError:
            return ModelFacts(None)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        facts = self._facts.get(key)
        if facts is None:
            facts = await asyncio.to_thread(_file_facts, path)
            self._facts[key] = facts
        if facts.format != "gguf":
            return facts
        return dataclasses.replace(facts, digest=await self._digest(key, path))

    async def _digest(self, key: tuple[str, int, int], path: Path) -> str:
        """The file's sha256, waiting at most `digest_wait_seconds` for a hash under way ("" then)."""
        task = self._digests.get(key)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(_sha256, path))
            self._digests[key] = task
        if not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self._digest_wait)
        if not task.done():
            return ""
        if not task.cancelled() and task.exception() is None:
            return task.result()
        logger.warning("cannot hash %s: %s", path, "cancelled" if task.cancelled() else task.exception())
        del self._digests[key]
        return ""
