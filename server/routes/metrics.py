from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.dependencies import AppSettings, Client, require_api_key

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request, client: Client, settings: AppSettings) -> Response:
    """Prometheus metrics; open unless JARVIS_METRICS_REQUIRE_KEY=true."""
    if settings.metrics_require_key:
        require_api_key(request, settings)
    return Response(client.metrics.render(), media_type=CONTENT_TYPE_LATEST)
