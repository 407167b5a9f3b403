"""The running server, reached through its admin API: URL and admin key from .env (or flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cli.errors import CliError, ExitCode

# HTTP status of an admin API error -> what the command exits with.
_EXIT_CODES = {400: ExitCode.BAD_INPUT, 404: ExitCode.BAD_INPUT, 422: ExitCode.BAD_INPUT, 401: ExitCode.REFUSED, 403: ExitCode.REFUSED}


@dataclass(frozen=True)
class Connection:
    url: str
    admin_key: str | None

    def health(self) -> dict[str, Any] | None:
        """/health's answer (200 or 503), or None when no server answers."""
        try:
            response = httpx.get(f"{self.url}/health", timeout=5)
        except httpx.TransportError:
            return None
        try:
            return {"http_status": response.status_code, **response.json()}
        except ValueError:
            raise CliError(f"{self.url} answers, but not as a Jarvis server (/health is not JSON)", ExitCode.NO_SERVER) from None

    def require_server(self) -> dict[str, Any]:
        health = self.health()
        if health is None:
            raise CliError(f"no Jarvis server answers at {self.url}; start it with ./run.sh (or pass --url)", ExitCode.NO_SERVER)
        return health

    def call(self, method: str, path: str, *, body: object = None, timeout: float = 30) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        try:
            response = httpx.request(method, f"{self.url}{path}", json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise CliError(f"{method} {path} did not answer within {timeout:.0f} s", ExitCode.FAILED) from None
        except httpx.TransportError as error:
            raise CliError(f"no Jarvis server answers at {self.url} ({error}); start it with ./run.sh", ExitCode.NO_SERVER) from None
        if response.status_code < 400:
            return response.json()
        raise CliError(self._message(response), _EXIT_CODES.get(response.status_code, ExitCode.FAILED))

    def _message(self, response: httpx.Response) -> str:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip() or f"HTTP {response.status_code}"
        if response.status_code in (401, 403) and not self.admin_key:
            message += " (set JARVIS_ADMIN_KEY in .env, or pass --admin-key)"
        return message
