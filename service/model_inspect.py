"""Turn what an operator has (a GGUF file, an HF model folder, an HF model id, or a pasted
`vllm serve ...` command) into a proposed registry entry, from what the source says about
itself: GGUF metadata, an HF folder's config.json (quantization_config, dtype, context)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from backends import ENGINE_KINDS, engine_kind
from backends.kinds import model_format
from chat_formats import CHAT_FORMATS
from service.gguf_metadata import GGUFError, read_gguf
from service.model_files import hf_cached_snapshot
from service.vllm_command import CommandParseError, parse_vllm_command

_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_COMMAND_START = re.compile(r"^\s*(\$\s*)?([A-Z_][A-Z0-9_]*=\S*\s+)*(\S*/)?(vllm|python[0-9.]*)\s")

# config.json quantization_config.quant_method -> vLLM's --quantization name
_VLLM_QUANTIZATION = {"bitsandbytes": "bitsandbytes", "awq": "awq", "gptq": "gptq", "fp8": "fp8", "compressed-tensors": "compressed-tensors"}


class SourceError(ValueError):
    """The source cannot become an entry; the message (one line) says why and what to give."""


@dataclass
class Proposal:
    entry: dict[str, Any]  # the registry entry to write
    detected: dict[str, Any] = field(default_factory=dict)  # what the source said about itself
    notes: list[str] = field(default_factory=list)  # what the operator should know


def inspect_source(
    source: str,
    *,
    default_context: int,
    alias: str | None = None,
    engine: str | None = None,
    chat_format: str | None = None,
    context_size: int | None = None,
) -> Proposal:
    """The entry `source` proposes, with the operator's choices over what was detected;
    `default_context` caps the context of models that allow more."""
    for matches, inspect in _INSPECTORS:
        if matches(source):
            proposal = _with_overrides(inspect(source), alias, engine, chat_format)
            _context(proposal, context_size, default_context)
            _check_engine(proposal)
            return proposal
    raise SourceError(
        f"{source!r} is neither a GGUF file, an HF model folder, an HF model id (org/name) nor a `vllm serve` command"
    )


def _with_overrides(proposal: Proposal, alias: str | None, engine: str | None, chat_format: str | None) -> Proposal:
    entry = proposal.entry
    if alias:
        entry["alias"] = alias
    if engine and engine != entry["engine"]:
        options = {name: value for name, value in entry.get("options", {}).items() if engine_kind(engine).option(name)}
        entry.update(engine=engine, options=options)
        if not options:
            entry.pop("options")
    if chat_format:
        entry["chat_format"] = chat_format
        proposal.notes = [note for note in proposal.notes if "--chat-format" not in note]
    return proposal


def _check_engine(proposal: Proposal) -> None:
    kind = engine_kind(proposal.entry["engine"])
    source = model_format(proposal.entry["model"])
    if not kind.runs(source):
        raise SourceError(f"the {kind.name} engine runs {' and '.join(kind.formats)} models; {proposal.entry['model']} is {source}")


# ---- the kinds of source ------------------------------------------------------------------------


def _is_command(source: str) -> bool:
    return bool(_COMMAND_START.match(source)) or source.lstrip().startswith(("serve ", "--model"))


def _from_command(source: str) -> Proposal:
    try:
        parsed = parse_vllm_command(source)
    except CommandParseError as error:
        raise SourceError(f"the vllm serve command cannot be read: {error}") from None
    model = parsed.entry["model"]
    proposal = Proposal(dict(parsed.entry), {"unmapped_flags": parsed.unmapped})
    local = Path(model).expanduser()
    if local.is_file() or local.is_dir():
        facts = _from_path(model)
        proposal.detected.update(facts.detected)
        proposal.notes.extend(facts.notes)
    on_machine = local.exists() or hf_cached_snapshot(model) is not None
    proposal.entry["source"] = {**_source_facts(proposal.detected), "kind": "vllm-command", "local": on_machine}
    if not on_machine:
        proposal.notes.append(f"{model} is not on this machine: vLLM will fetch it from the model hub on its first load")
    if parsed.unmapped:
        proposal.notes.append(f"flags with no equivalent here, left out: {' '.join(parsed.unmapped)}")
    return proposal


def _is_path(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or source.endswith(".gguf") or source.startswith(("/", "./", "../", "~"))


def _from_path(source: str) -> Proposal:
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        return _from_hf_folder(path, str(path), "hf-folder")
    if not path.exists():
        raise SourceError(f"no such file or folder: {source}")
    try:
        info = read_gguf(path)
    except GGUFError as error:
        raise SourceError(f"{error}; give a .gguf file, an HF model folder, an HF model id or a `vllm serve` command") from None
    detected = {
        "format": "gguf",
        "architecture": info.architecture,
        "name": info.name,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "embedded_chat_template": info.chat_template is not None,
    }
    entry: dict[str, Any] = {"alias": _alias(path.name), "engine": _engine_for("gguf"), "model": str(path)}
    proposal = Proposal(entry, detected)
    _chat_format(proposal, info.architecture, info.chat_template is not None)
    entry["source"] = {**_source_facts(detected), "kind": "gguf"}
    return proposal


def _is_hf_id(source: str) -> bool:
    return bool(_HF_ID.fullmatch(source.strip()))


def _from_hf_id(source: str) -> Proposal:
    model_id = source.strip()
    snapshot = hf_cached_snapshot(model_id)
    if snapshot is not None:
        proposal = _from_hf_folder(snapshot, model_id, "hf-id")
        proposal.notes.append(f"{model_id} is in the HF cache on this machine ({snapshot})")
        return proposal
    entry = {
        "alias": _alias(model_id),
        "engine": _engine_for("hf"),
        "model": model_id,
        "source": {"kind": "hf-id", "local": False},
    }
    notes = [f"{model_id} is not on this machine: vLLM will fetch it from the model hub on its first load"]
    return Proposal(entry, {"format": "hf", "local": False}, notes)


def _from_hf_folder(folder: Path, model: str, kind: str) -> Proposal:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError:
        raise SourceError(f"{folder} has no config.json: it is not an HF model folder") from None
    except json.JSONDecodeError as error:
        raise SourceError(f"{config_path} is not valid JSON ({error})") from None
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    quantization = _quantization(config.get("quantization_config"))
    context = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
    detected = {
        "format": "hf",
        "architecture": config.get("model_type"),
        "architectures": config.get("architectures"),
        "quantization": quantization,
        "dtype": config.get("torch_dtype") or config.get("dtype") or text_config.get("torch_dtype"),
        "context_length": context if isinstance(context, int) else None,
        "embedded_chat_template": _has_chat_template(folder),
    }
    entry: dict[str, Any] = {"alias": _alias(model), "engine": _engine_for("hf"), "model": model}
    proposal = Proposal(entry, detected)
    if quantization:
        vllm_name = _VLLM_QUANTIZATION.get(quantization, quantization)
        entry["options"] = {"quantization": vllm_name}
    _chat_format(proposal, detected["architecture"], detected["embedded_chat_template"])
    entry["source"] = {**_source_facts(detected), "kind": kind}
    return proposal


def _quantization(config: object) -> str | None:
    if not isinstance(config, dict):
        return None
    method = config.get("quant_method")
    if method is None and (config.get("load_in_4bit") or config.get("load_in_8bit")):
        method = "bitsandbytes"
    return str(method).lower() if method else None


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(tokenizer_config.get("chat_template"))


# Checked in order: the first that matches reads the source.
_INSPECTORS: list[tuple[Callable[[str], bool], Callable[[str], Proposal]]] = [
    (_is_command, _from_command),
    (_is_path, _from_path),
    (_is_hf_id, _from_hf_id),
]


# ---- proposals ----------------------------------------------------------------------------------


def _alias(name: str) -> str:
    stem = PurePath(name.rstrip("/")).name.removesuffix(".gguf")
    return re.sub(r"[^\w.-]+", "-", stem).lower()


def _engine_for(source_format: str) -> str:
    """The first engine kind (in the registry's order of preference) that runs this format."""
    return next(kind.name for kind in ENGINE_KINDS.values() if kind.runs(source_format))  # type: ignore[arg-type]


def _chat_format(proposal: Proposal, architecture: str | None, embedded: bool) -> None:
    if embedded:
        proposal.detected["chat_format"] = "the template embedded in the model"
        return
    known = next((name for name, chat_format in CHAT_FORMATS.items() if architecture in chat_format.architectures), None)
    if known:
        proposal.detected["chat_format"] = f"{known} (the format of architecture {architecture})"
        return
    proposal.entry["chat_format"] = "chatml"
    proposal.notes.append(
        f"no chat template in the model and no format known for architecture {architecture!r}: proposing chatml; "
        f"choose with --chat-format ({', '.join(sorted(CHAT_FORMATS))} or a template file)"
    )


def _context(proposal: Proposal, chosen: int | None, default_context: int) -> None:
    model_context = proposal.detected.get("context_length")
    if chosen:
        proposal.entry["context_size"] = chosen
        return
    if model_context is None or "max_model_len" in proposal.entry.get("options", {}):  # --max-model-len decides
        return
    proposal.entry["context_size"] = min(model_context, default_context)
    if model_context > default_context:
        proposal.notes.append(
            f"the model allows {model_context} tokens of context; proposing {default_context} (JARVIS_CONTEXT_SIZE); "
            "raise it with --context-size"
        )


def _source_facts(detected: dict[str, Any]) -> dict[str, Any]:
    names = ("architecture", "quantization", "dtype", "context_length", "embedded_chat_template")
    return {name: detected[name] for name in names if detected.get(name) is not None}
