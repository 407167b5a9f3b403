"""HEAD works wherever GET does: the GET route answers, and the body is dropped.

FastAPI routes answer only the methods they declare, so without this a HEAD on `/health` is a 405.
Adding HEAD to every GET route instead would list each one twice in the OpenAPI schema."""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadRequestMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}
        if any(route.matches(as_get)[0] is Match.FULL for route in self.router.routes):
            scope = as_get

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, without_body)
