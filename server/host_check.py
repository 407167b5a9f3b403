"""Refuse requests addressed to a DNS name the server was not told about.

A web page can make a browser resolve its own name to 127.0.0.1 or a LAN address (DNS rebinding)
and then talk to a server without a key as if it were the same site; the browser still sends the
page's name in the Host header. IP literals and `localhost` cannot be rebound, so they always
pass: Home Assistant reaching the server by IP keeps working."""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ErrorDetail, error_response
from service.settings import Settings


def host_name(host_header: str) -> str:
    """The name or address of a Host header, without port, brackets or a trailing dot."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:  # name:port or v4:port (a bare v6 address has several colons)
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.partition("%")[0])  # without a v6 zone id
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which names may be the Host: localhost, IP literals, and the configured names (`*.x`
    for every subdomain of x, `*` for anything)."""

    def __init__(self, allowed: list[str], api_key_set: bool) -> None:
        names = {host_name(name) for name in allowed}
        self.allow_any = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self.names = {name for name in names if not name.startswith("*")} | {"localhost"}
        self.api_key_set = api_key_set

    def allows(self, host_header: str | None) -> bool:
        if host_header is None or self.allow_any:  # no Host (HTTP/1.0) comes from no browser
            return True
        name = host_name(host_header)
        return name in self.names or is_ip_literal(name) or name.endswith(self.suffixes)

    def refusal(self, host_header: str) -> str:
        name = host_name(host_header)
        if self.api_key_set:
            return f"Host {name!r} is not in JARVIS_ALLOWED_HOSTS: add it there to reach this server by that name"
        return (
            f"Host {name!r} is not allowed: a server without JARVIS_API_KEY answers only to localhost, "
            "IP addresses and the names in JARVIS_ALLOWED_HOSTS (against DNS rebinding). Add "
            f"{name!r} to JARVIS_ALLOWED_HOSTS, or set JARVIS_API_KEY"
        )


def host_policy(settings: Settings) -> HostPolicy | None:
    """The policy to enforce: always without an API key, with one only when names are configured."""
    if settings.api_key is not None and not settings.allowed_hosts:
        return None
    return HostPolicy(settings.allowed_hosts, api_key_set=settings.api_key is not None)


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            if not self.policy.allows(host):
                detail = ErrorDetail(403, self.policy.refusal(host or ""), code="host_not_allowed")
                await error_response(scope["path"], detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
