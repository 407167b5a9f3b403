"""Request dependencies: the facade from app state, and the API key check for /v1."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from core.generation import GenerationCore
from service.audit import key_identity
from service.gguf_client import GGUFClient
from service.settings import Settings


def get_client(request: Request) -> GGUFClient:
    return request.app.state.client


def get_core(request: Request) -> GenerationCore:
    return request.app.state.core


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


Client = Annotated[GGUFClient, Depends(get_client)]
Core = Annotated[GenerationCore, Depends(get_core)]
AppSettings = Annotated[Settings, Depends(get_settings)]


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def require_admin_key(request: Request, settings: AppSettings) -> str:
    """The admin API needs JARVIS_ADMIN_KEY; the inference key never opens it. Returns the
    caller's key identity for the audit trail."""
    if settings.admin_key is None:
        raise HTTPException(status_code=403, detail="The admin API is off: set JARVIS_ADMIN_KEY to enable it")
    presented = _presented_key(request)
    if not _matches(presented, settings.admin_key.get_secret_value()):
        raise HTTPException(
            status_code=401,
            detail="Invalid or missing admin key: send JARVIS_ADMIN_KEY as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key_identity(presented or "")


AdminIdentity = Annotated[str, Depends(require_admin_key)]


def require_api_key(request: Request, settings: AppSettings) -> None:
    """With JARVIS_API_KEY set, /v1 needs it (Bearer or X-Api-Key); without it, anything goes."""
    if settings.api_key is None:
        return
    if not _matches(_presented_key(request), settings.api_key.get_secret_value()):
        raise HTTPException(
            status_code=401,
            detail="Invalid or missing API key: send it as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
