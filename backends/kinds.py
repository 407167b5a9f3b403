"""The engine kinds this server can run, one declaration each. A new option is one line here;
a new engine kind is one more declaration (and its engine module)."""

from __future__ import annotations

import importlib.util
from typing import Literal

from backends import probe
from backends.base import EngineError
from backends.descriptor import Availability, EngineKind, EngineOption, ModelFormat, ServerLaunch
from backends.remote.config import FLAVOURS, upstreams_problem


def _llama_cpp_available() -> Availability:
    if importlib.util.find_spec("llama_cpp") is None:
        return Availability(False, "llama-cpp-python is not installed: run ./run.sh, which builds it for this CPU")
    return Availability(True, "llama-cpp-python is installed")


def _vllm_available() -> Availability:
    import backends  # late: tests replace backends.vllm_installed

    if not backends.vllm_installed():
        return Availability(False, "vLLM is not installed: set JARVIS_INFERENCE_ENGINE=vllm and run ./run.sh, which installs it")
    return Availability(True, "vLLM is installed")


LLAMA_CPP = EngineKind(
    name="llama_cpp",
    label="llama.cpp",
    engine_class="backends.llama_cpp_engine:LlamaCppEngine",
    formats=("gguf",),
    settings_prefix="",
    check=_llama_cpp_available,
    build=probe.llama_cpp_report,
    # As a managed upstream: llama-cpp-python's own server (its flags are its own, not llama-server's;
    # it serves one request at a time, so `parallel` and `max_queue` have no equivalent there).
    # By default it cuts a running answer when any other request arrives: here requests wait instead.
    server=ServerLaunch(
        program=("{python}", "-m", "llama_cpp.server"),
        model_flag="model",
        context_flag="n_ctx",
        flavour="llama_cpp",
        flags={"n_gpu_layers": "n_gpu_layers", "n_threads": "n_threads"},
        fixed=("--interrupt_requests", "false"),
    ),
    options=(
        EngineOption("n_gpu_layers", int, 0, "layers offloaded to the GPU; -1 = all, 0 = CPU only.", ge=-1, flag="n-gpu-layers"),
        EngineOption("n_threads", int, None, "CPU threads. Empty = all cores.", ge=1, flag="threads"),
        EngineOption("parallel", int, 4, "requests decoded at once (slots).", ge=1, le=64, flag="parallel"),
        EngineOption("max_queue", int, 16, "requests that may wait for a free slot; past it the answer is 429.", ge=0),
        EngineOption(
            "prompt_cache_disk_mb", int, 1024, "disk space (MiB) for cached prompt prefixes, saved when the model unloads or "
            "the server stops and restored when it loads again. 0 = keep nothing on disk.", ge=0,
        ),
        EngineOption(
            "prompt_cache_ram_mb", int, 512, "host memory (MiB) for cached prompt prefixes whose slot another request "
            "took, so a returning conversation does not compute them again. 0 = none.", ge=0,
        ),
    ),
)

VLLM = EngineKind(
    name="vllm",
    label="vLLM",
    engine_class="backends.vllm_engine:VllmEngine",
    formats=("gguf", "hf"),
    settings_prefix="vllm_",
    check=_vllm_available,
    build=probe.vllm_build_report,
    # As a managed upstream: `vllm serve`, which also tells this server its chat template
    # (/tokenizer_info), reports cached prompt tokens, and writes compact JSON as the in-process
    # engine does (see VllmEngine._engine_args).
    server=ServerLaunch(
        program=("vllm", "serve"),
        model_flag=None,
        context_flag="max-model-len",
        flavour="vllm",
        fixed=(
            "--enable-tokenizer-info-endpoint",
            "--enable-prompt-tokens-details",
            "--structured-outputs-config",
            '{"backend": "xgrammar", "disable_any_whitespace": true}',
        ),
    ),
    options=(
        EngineOption("tensor_parallel_size", int, 1, "GPUs one model is split over.", ge=1, flag="tensor-parallel-size"),
        EngineOption("pipeline_parallel_size", int, 1, "pipeline stages (GPUs or machines).", ge=1, flag="pipeline-parallel-size"),
        EngineOption(
            "distributed_executor_backend", Literal["mp", "ray"], None,
            "mp (one machine) or ray (several machines). Empty = vLLM's choice.", flag="distributed-executor-backend",
        ),
        EngineOption("gpu_memory_utilization", float, 0.9, "share of GPU memory it may use.", gt=0, le=1, flag="gpu-memory-utilization"),
        EngineOption(
            "max_model_len", int, None, "context length in tokens. Empty = the model's context size (JARVIS_CONTEXT_SIZE).",
            ge=256, flag="max-model-len", engine_argument=False,
        ),
        EngineOption(
            "dtype", Literal["auto", "half", "float16", "bfloat16", "float", "float32"], "auto",
            "weight dtype; auto = as the model says.", flag="dtype",
        ),
        EngineOption("quantization", str, None, "quantization method (awq, gptq, fp8, ...). Empty = as the model says.", flag="quantization"),
        EngineOption("enforce_eager", bool, False, "disable CUDA graphs (less memory, slower).", flag="enforce-eager"),
        EngineOption("enable_prefix_caching", bool, True, "reuse the KV cache of shared prefixes.", flag="enable-prefix-caching"),
        EngineOption("max_num_seqs", int, None, "sequences batched at once. Empty = vLLM's default.", ge=1, flag="max-num-seqs"),
        EngineOption(
            "cpu_kvcache_space_gb", float, None, "on CPU (no GPU): KV-cache size in GiB. Empty = 1 GiB.",
            gt=0, environment="VLLM_CPU_KVCACHE_SPACE", engine_argument=False,
        ),
    ),
)

def _remote_available() -> Availability:
    return Availability(True, "talks to other servers over HTTP (httpx)")


OPENAI = EngineKind(
    name="openai",
    label="remote OpenAI-compatible server",
    engine_class="backends.remote.engine:RemoteEngine",
    formats=("remote",),
    settings_prefix="openai_",
    check=_remote_available,
    local=False,
    options=(
        EngineOption(
            "base_url", str, None, "the upstream's OpenAI base URL (http://gpu-box:8000/v1). Several upstreams: "
            "`upstreams` instead.",
        ),
        EngineOption(
            "api_key_env", str, None, "name of the environment variable holding the upstream's key (the key itself "
            "is never written in models.yaml). Empty = no key.",
        ),
        EngineOption(
            "flavour", Literal[FLAVOURS], "auto",  # type: ignore[valid-type]
            "what the upstream is: vllm (vllm serve), jarvis (this server), llama_cpp (llama-cpp-python's server), "
            "chat (an API that takes only chat: the conversation is passed on), or auto (asked at load; never chat).",
        ),
        EngineOption("connect_timeout", float, 5.0, "seconds to connect to an upstream before it counts as down.", gt=0),
        EngineOption(
            "timeout", float, 120.0, "seconds an upstream may take to the first token, and between tokens; past it "
            "the request fails with 504 (or goes to another upstream, before the first token).", gt=0,
        ),
        EngineOption("health_interval", float, 5.0, "seconds between health checks of each upstream; a down one is "
                     "probed as often until it answers.", gt=0),
        EngineOption(
            "startup_timeout", float, 600.0, "seconds a load waits for upstreams that are starting: one that answers "
            "503 while it loads its model, or one this server starts.", gt=0,
        ),
        EngineOption(
            "tokenizer", str, None, "the GGUF file the upstreams run: its vocabulary is read here (not its weights) and "
            "prompts are tokenized here, one round trip less per request. Empty = the upstream tokenizes.",
        ),
        EngineOption(
            "upstreams", list, None, "several upstreams for one model, each {base_url, api_key_env, flavour, start}; "
            "`start: {engine, via, model, context_size, options}` makes this server start and stop it (see README).",
            check=upstreams_problem,
        ),
    ),
)

# In order of preference where nothing else decides (the fallback tries the local ones in this order).
ENGINE_KINDS: dict[str, EngineKind] = {kind.name: kind for kind in (LLAMA_CPP, VLLM, OPENAI)}


def engine_names() -> tuple[str, ...]:
    return tuple(ENGINE_KINDS)


def local_engine_names() -> tuple[str, ...]:
    """The kinds that run a model in this process (the engine fallback and switch choose among these)."""
    return tuple(name for name, kind in ENGINE_KINDS.items() if kind.local)


def engine_kind(name: str) -> EngineKind:
    try:
        return ENGINE_KINDS[name]
    except KeyError:
        raise EngineError(f"unknown inference engine {name!r}; choose one of {', '.join(ENGINE_KINDS)}") from None


def model_format(model: str) -> ModelFormat:
    """'gguf' for a GGUF file (or the packaged model, given as ''), else 'hf'."""
    return "gguf" if not model or model.endswith(".gguf") else "hf"
