"""Inference engines, one module each, looked up by name. Importing this package is cheap:
an engine module is imported only when that engine is chosen."""

from __future__ import annotations

import importlib

from backends.base import Engine, EngineConfig, EngineError

# name -> "module:Class". Lazy so that a llama.cpp user never imports vLLM, and vice versa.
ENGINES: dict[str, str] = {
    "llama_cpp": "backends.llama_cpp_engine:LlamaCppEngine",
    "vllm": "backends.vllm_engine:VllmEngine",
}


def create_engine(name: str, config: EngineConfig) -> Engine:
    try:
        target = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown inference engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(config)
