"""The admin audit trail: one JSON line per admin action (time, key identity, action, from, to),
appended to a file and logged."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger("jarvis.audit")


def key_identity(key: str) -> str:
    """A stable name for a key that does not reveal it."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, identity: str, action: str, before: object = None, after: object = None) -> dict[str, object]:
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key": identity,
            "action": action,
            "from": before,
            "to": after,
        }
        text = json.dumps(line, ensure_ascii=False, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(text + "\n")
        logger.info("%s", text)
        return line
