"""Secrets never reach a log line or the audit trail: one `redact` for both, and a logging filter
that applies it to every record a handler writes."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

REDACTED = "[REDACTED]"

# A value as it appears in a command line, an env line, a query string or JSON: quoted or bare.
_VALUE = r"""(?!\[REDACTED\])(?:"[^"]*"|'[^']*'|[^\s"',;&}\])]+)"""
# Names whose value is a secret: FOO_KEY, x-api-key, HF_TOKEN, CLIENT_SECRET, PASSWORD, db_password.
_SECRET_NAME = r"[\w-]*[_-](?:key|token|secret)|[\w-]*password|passwd"


def _keep_quotes(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('name')}{match.group('sep')}{quote}{REDACTED}{quote}"


# (pattern, replacement); applied in order. Each keeps what the secret is and hides its value.
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # Command-line flags: --api-key VALUE, --hf-token=VALUE, --db-password 'a b'.
    (re.compile(rf"(?P<name>--[\w-]*(?:key|token|secret|password))(?P<sep>=|\s+)(?P<value>{_VALUE})", re.I), _keep_quotes),
    # Assignments and fields: JARVIS_API_KEY=..., ?api_key=..., "hf_token": "...", x-api-key: ...
    (re.compile(rf"(?P<name>\b(?:{_SECRET_NAME}))(?P<sep>[\"']?\s*[:=]\s*)(?P<value>{_VALUE})", re.I), _keep_quotes),
    # Authorization header values, and a Bearer token quoted anywhere else.
    (re.compile(r"(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)(?!\[REDACTED\])[^\s\"',]+", re.I), rf"\1{REDACTED}"),
    (re.compile(r"\b(Bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    # Provider keys that stand alone: sk-..., sk-proj-..., sk-ant-... and Hugging Face hf_... tokens.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), REDACTED),
]
_SECRET_FIELD = re.compile(rf"(?:{_SECRET_NAME})", re.I)


def redact(text: str) -> str:
    """`text` with every secret value it carries replaced by [REDACTED]."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: object) -> object:
    """A JSON-like value with its strings redacted and the values of secret-named keys hidden."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and _SECRET_FIELD.fullmatch(key) and item is not None else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Redacts a record's message, exception text and stack before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message and not self._redact_args(record, redacted):
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

    @staticmethod
    def _redact_args(record: logging.LogRecord, redacted: str) -> bool:
        """Redact the arguments one by one where that gives the same text, so formatters that read
        `record.args` (uvicorn's access log) still find them."""
        args = record.args
        if not isinstance(args, tuple) or not isinstance(record.msg, str):
            return False
        if not all(isinstance(arg, str | int | float) for arg in args):
            return False
        new_args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in args)
        new_msg = redact(record.msg)
        try:
            if new_msg % new_args != redacted:
                return False
        except (TypeError, ValueError):
            return False
        record.msg, record.args = new_msg, new_args
        return True


def install_log_redaction() -> None:
    """Put the redacting filter on every handler configured so far (the root logger's and any
    logger's own), once."""
    loggers = [logging.getLogger(), *(item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
                handler.addFilter(RedactingFilter())
