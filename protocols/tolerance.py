"""Tolerant requests: every protocol accepts fields it does not use, and says so in the log."""

from __future__ import annotations

import logging

logger = logging.getLogger("protocols")


def log_unknown_fields(*models: object) -> None:
    """Log the request fields (of the wire models given; None skipped) this server ignores."""
    unknown = sorted({name for model in models if model is not None for name in model.unknown_fields()})  # type: ignore[attr-defined]
    if unknown:
        logger.info("ignoring request fields this server does not use: %s", ", ".join(unknown))
