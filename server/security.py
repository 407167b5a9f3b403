"""The security defaults of the HTTP layer, wired into the app in one place: the Host check, CORS
(off unless configured), the API docs (off unless enabled), request body checks, HEAD, log
redaction, and a warning when the server is open beyond this machine."""

from __future__ import annotations

import ipaddress
import logging

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from server.errors import ErrorDetail, error_response
from server.head_requests import HeadRequestMiddleware
from server.host_check import HostCheckMiddleware, host_policy
from server.request_body import RequestBodyMiddleware
from service.audit import SECRET_FILE_NAME, KeyIdentity
from service.redaction import install_log_redaction
from service.settings import Settings

logger = logging.getLogger("jarvis.security")


def docs_options(settings: Settings) -> dict[str, str | None]:
    """FastAPI's docs routes: served only when JARVIS_API_DOCS=true (None turns a route off)."""
    enabled = settings.api_docs
    return {
        "docs_url": "/docs" if enabled else None,
        "redoc_url": "/redoc" if enabled else None,
        "openapi_url": "/openapi.json" if enabled else None,
    }


class ConfiguredCorsMiddleware(CORSMiddleware):
    """Starlette's CORS for the origins in JARVIS_CORS_ORIGINS; a refused preflight gets the
    protocol's error body instead of Starlette's plain text."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        preflight = scope["type"] == "http" and scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight and "origin" in headers:
            response = self.preflight_response(request_headers=headers)
            if response.status_code == 400:
                refused = bytes(response.body).decode()
                message = f"CORS preflight refused ({refused}): allowed origins are set in JARVIS_CORS_ORIGINS"
                response = error_response(scope["path"], ErrorDetail(400, message))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost may resolve to anything
        return False


def warn_if_exposed(settings: Settings) -> None:
    if settings.api_key is not None or is_loopback(settings.host):
        return
    logger.warning(
        "SECURITY: JARVIS_HOST=%s listens beyond this machine and JARVIS_API_KEY is not set: anyone "
        "who can reach port %d can use the model through /v1 and /tokenize. "
        "Set JARVIS_API_KEY to require a key, or JARVIS_HOST=127.0.0.1 to listen on this machine only. "
        "(Meanwhile only localhost, IP addresses and JARVIS_ALLOWED_HOSTS are accepted as the Host.)",
        settings.host,
        settings.port,
    )


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the security middlewares (call after the app's other middlewares: these run first)."""
    install_log_redaction()
    warn_if_exposed(settings)
    secret = settings.audit_secret.get_secret_value() if settings.audit_secret else None
    app.state.key_identity = KeyIdentity(secret, settings.cache_dir / SECRET_FILE_NAME)
    # add_middleware puts each one outside the previous: the last added sees a request first.
    app.add_middleware(RequestBodyMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            ConfiguredCorsMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
        )
    policy = host_policy(settings)
    if policy is not None:
        app.add_middleware(HostCheckMiddleware, policy=policy)
    app.add_middleware(HeadRequestMiddleware, router=app.router)
