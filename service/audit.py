"""The admin audit trail: one JSON line per admin action (time, key identity, action, from, to),
appended to a file and logged, with secrets redacted. A key is named by an HMAC keyed with a
server secret, so the trail cannot be used to test guesses of the key."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from service.redaction import redact_value

logger = logging.getLogger("jarvis.audit")

SECRET_FILE_NAME = "audit-secret"


def load_or_create_secret(path: Path) -> bytes:
    """The secret kept in `path`, generated on first use and readable by its owner only."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(descriptor, "w") as file:
        file.write(secret.hex() + "\n")
    logger.info("generated the audit key-identity secret in %s", path)
    return secret


class KeyIdentity:
    """Names a key for the audit trail: `key-` and the start of HMAC-SHA256(secret, key).

    The secret comes from the setting, else from the secret file (made on the first admin action)."""

    def __init__(self, secret: str | None, secret_file: Path) -> None:
        self._secret = secret.encode() if secret else None
        self._secret_file = secret_file

    def __call__(self, key: str) -> str:
        if self._secret is None:
            self._secret = load_or_create_secret(self._secret_file)
        return "key-" + hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:16]


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, identity: str, action: str, before: object = None, after: object = None) -> dict[str, object]:
        line: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key": identity,
            "action": redact_value(action),
            "from": redact_value(before),
            "to": redact_value(after),
        }
        text = json.dumps(line, ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(text + "\n")
        logger.info("%s", text)
        return line
