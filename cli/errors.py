"""Exit codes scripts can trust, and the one error type commands raise."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the server or a check reported a failure (a model that does not load, doctor)
    BAD_INPUT = 2  # unknown alias, a file that is not a model, a malformed command or setting
    NO_SERVER = 3  # no Jarvis server answers at the URL
    REFUSED = 4  # the admin API refused: no admin key, or a wrong one


class CliError(Exception):
    """Ends the command with one line on stderr and `code` as the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code
