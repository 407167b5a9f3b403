"""The settings page at /ui: static files from `web/`, no CDN, no network at run time. Every file
goes out with a strict Content-Security-Policy (scripts, styles and connections from this server
only, nothing inline), so the page cannot be made to run injected script. Its data comes from the
admin API with the key the operator types in, and its test box from /v1."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
PAGE_PATH = "/ui"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidated on every load, so a new version of the server serves its own page.
    "Cache-Control": "no-cache",
}


class PageFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


router = APIRouter(include_in_schema=False)


@router.get(PAGE_PATH)
async def page_root() -> RedirectResponse:
    # The page's files are addressed relative to /ui/; a relative Location keeps the Host the browser used.
    return RedirectResponse(f"{PAGE_PATH}/", status_code=308, headers=PAGE_HEADERS)


def install(app: FastAPI) -> None:
    if not WEB_DIR.is_dir():  # an install without the repository's web/ folder still serves the APIs
        logger.warning("the settings page's files are not at %s: /ui is not served", WEB_DIR)
        return
    app.include_router(router)
    app.mount(PAGE_PATH, PageFiles(directory=WEB_DIR, html=True), name="ui")
