"""Where the project keeps derived files. Standard library only: run.sh's install steps use it
before anything else is installed."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """JARVIS_CACHE_DIR's default: the user's cache directory (XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jarvis-llm-proxy"
