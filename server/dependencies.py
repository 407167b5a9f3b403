"""Request dependencies: the facade from app state, and the API key check for /v1."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from core.generation import GenerationCore
from service.audit import KeyIdentity
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


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def require_admin_key(request: Request, settings: AppSettings) -> str:
    """The admin API needs JARVIS_ADMIN_KEY as a Bearer token (never in x-api-key, where inference
    clients put their key); the inference key never opens it. Returns the caller's key identity
    for the audit trail."""
    if settings.admin_key is None:
        raise HTTPException(status_code=403, detail="The admin API is off: set JARVIS_ADMIN_KEY to enable it")
    presented = _bearer_token(request)
    if not _matches(presented, settings.admin_key.get_secret_value()):
        raise HTTPException(
            status_code=401,
            detail="Invalid or missing admin key: send JARVIS_ADMIN_KEY as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    identity: KeyIdentity = request.app.state.key_identity
    return identity(presented or "")


AdminIdentity = Annotated[str, Depends(require_admin_key)]


def require_api_key(request: Request, settings: AppSettings) -> None:
    """With JARVIS_API_KEY set, inference routes need it as a Bearer token or in x-api-key (what
    Anthropic's SDK sends); without it, anything goes."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value()
    presented = (_bearer_token(request), request.headers.get("x-api-key"))
    if not any([_matches(key, expected) for key in presented]):  # a list: compare both, always
        raise HTTPException(
            status_code=401,
            detail="Invalid or missing API key: send JARVIS_API_KEY as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
