"""Environment vLLM reads at import, set before the first `import vllm` of a process."""

from __future__ import annotations

import logging
import os

from backends import nvidia_gpu_present

logger = logging.getLogger(__name__)

# vLLM's CPU build saves AOT-compiled artifacts it then fails to load ("'function' object has no
# attribute 'finalize_loading'"), so every start compiled the model again: 252 s to /health 200
# on 2 cores. Its torch.compile cache does load back: 173 s. A value the user sets is kept.
CPU_DEFAULTS: dict[str, str] = {"VLLM_USE_AOT_COMPILE": "0"}


def prepare_vllm_environment() -> None:
    if nvidia_gpu_present():
        return
    for name, value in CPU_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            logger.info("vLLM on CPU: %s=%s (set it in the environment to override)", name, value)
