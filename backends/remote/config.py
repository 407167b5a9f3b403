"""The upstreams of a remote model, read from its engine options: one `base_url`, or a list of
`upstreams`, each of which may say that this server starts it (`start:`). The same reading
checks a models.yaml entry (the `upstreams` option's check) and configures the engine, so an
entry that loads is one that was accepted."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

FLAVOURS = ("auto", "vllm", "jarvis", "llama_cpp", "chat")
Via = Literal["native", "jarvis"]
VIAS: tuple[str, ...] = ("native", "jarvis")

_UPSTREAM_FIELDS = ("base_url", "api_key_env", "flavour", "start")
_START_FIELDS = ("engine", "via", "model", "context_size", "options", "startup_timeout", "env")
DEFAULT_STARTUP_TIMEOUT = 600.0


class UpstreamConfigError(ValueError):
    """An upstream is configured wrongly; the message names the field (`upstreams.1.start.engine`)."""


@dataclass(frozen=True)
class LaunchSpec:
    """An upstream server this one starts: which engine, how (`native`: the engine's own server,
    `vllm serve` or llama-cpp-python's; `jarvis`: this server's own process), on which model."""

    engine: str
    via: Via = "native"
    model: str = ""  # empty: the remote entry's model
    context_size: int | None = None  # empty: the remote entry's context size
    options: Mapping[str, Any] = field(default_factory=dict)
    startup_timeout: float | None = None  # empty: the model's startup_timeout option
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str  # the OpenAI base URL, ending in /v1
    api_key_env: str | None = None
    flavour: str = "auto"
    launch: LaunchSpec | None = None

    @property
    def root(self) -> str:
        """The server's root URL (where /health and /tokenize are)."""
        return self.base_url.removesuffix("/v1")

    @property
    def name(self) -> str:
        """How logs, status and metrics name it: host:port, plus the path when there is one."""
        parts = urlsplit(self.base_url)
        path = parts.path.removesuffix("/v1")
        return f"{parts.netloc}{path}"

    def api_key(self) -> str | None:
        """The key from the environment variable the entry names (never from the entry itself)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def normalise_base_url(url: str, where: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UpstreamConfigError(f"{where}: {url!r} is not an http(s) URL; write it like http://gpu-box:8000/v1")
    if parts.query or parts.fragment:
        raise UpstreamConfigError(f"{where}: {url!r} has a query or fragment; give the server's base URL only")
    path = parts.path.rstrip("/")
    path = path if path.endswith("/v1") else f"{path}/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def upstream_configs(options: Mapping[str, Any]) -> list[UpstreamConfig]:
    """The upstreams a remote model's options describe. `upstreams` entries inherit the model's
    `api_key_env` and `flavour` where they give none."""
    flavour = options.get("flavour") or "auto"
    key_env = options.get("api_key_env")
    listed = options.get("upstreams")
    if listed:
        return [_upstream(raw, f"upstreams.{index}", flavour, key_env) for index, raw in enumerate(listed)]
    base_url = options.get("base_url")
    if not base_url:
        raise UpstreamConfigError(
            "a remote model needs options.base_url (http://host:port/v1) or options.upstreams; "
            "or set JARVIS_OPENAI_BASE_URL for every remote model"
        )
    return [UpstreamConfig(normalise_base_url(base_url, "base_url"), key_env, flavour)]


def upstreams_problem(value: object) -> str | None:
    """The `upstreams` option's check, for models.yaml and the admin API."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of upstreams, each {base_url: ..., start: ...}"
    try:
        configs = [_upstream(raw, str(index), "auto", None) for index, raw in enumerate(value)]
    except UpstreamConfigError as error:
        return str(error)
    urls = [config.base_url for config in configs]
    duplicate = next((url for url in urls if urls.count(url) > 1), None)
    return f"{duplicate} is listed twice" if duplicate else None


def _upstream(raw: object, where: str, flavour: str, key_env: str | None) -> UpstreamConfig:
    if not isinstance(raw, Mapping):
        raise UpstreamConfigError(f"{where}: must be a mapping like {{base_url: http://host:8000/v1}}")
    _known(raw, _UPSTREAM_FIELDS, where)
    base_url = raw.get("base_url")
    if not isinstance(base_url, str) or not base_url:
        raise UpstreamConfigError(f"{where}.base_url: every upstream needs its base URL (http://host:port/v1)")
    own_flavour = raw.get("flavour", flavour)
    if own_flavour not in FLAVOURS:
        raise UpstreamConfigError(f"{where}.flavour: must be one of {', '.join(FLAVOURS)}, got {own_flavour!r}")
    own_key = raw.get("api_key_env", key_env)
    if own_key is not None and not isinstance(own_key, str):
        raise UpstreamConfigError(f"{where}.api_key_env: must be the name of an environment variable")
    url = normalise_base_url(base_url, f"{where}.base_url")
    launch = _launch(raw["start"], f"{where}.start", url) if raw.get("start") is not None else None
    return UpstreamConfig(url, own_key, own_flavour, launch)


def _launch(raw: object, where: str, base_url: str) -> LaunchSpec:
    from backends.kinds import ENGINE_KINDS  # late: kinds declares the option that calls this

    if not isinstance(raw, Mapping):
        raise UpstreamConfigError(f"{where}: must be a mapping like {{engine: vllm, options: {{...}}}}")
    _known(raw, _START_FIELDS, where)
    local = [name for name, kind in ENGINE_KINDS.items() if kind.local]
    engine = raw.get("engine")
    if engine not in local:
        raise UpstreamConfigError(f"{where}.engine: must be one of {', '.join(local)}, got {engine!r}")
    kind = ENGINE_KINDS[engine]
    via = raw.get("via", "native")
    if via not in VIAS:
        raise UpstreamConfigError(f"{where}.via: must be native (the engine's own server) or jarvis (this server), got {via!r}")
    if via == "native" and kind.server is None:
        raise UpstreamConfigError(f"{where}.via: {kind.label} has no server of its own here; use via: jarvis")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise UpstreamConfigError(f"{where}.options: must be a mapping of {kind.label} options")
    for name, value in options.items():
        option = kind.option(name)
        if option is None:
            raise UpstreamConfigError(f"{where}.options.{name}: not an option of the {engine} engine (known: {', '.join(kind.option_names)})")
        problem = option.problem(value)
        if problem:
            raise UpstreamConfigError(f"{where}.options.{name}: {problem}")
    context = raw.get("context_size")
    if context is not None and (not isinstance(context, int) or isinstance(context, bool) or context < 256):
        raise UpstreamConfigError(f"{where}.context_size: must be a whole number of at least 256, got {context!r}")
    timeout = raw.get("startup_timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0):
        raise UpstreamConfigError(f"{where}.startup_timeout: must be a number of seconds above 0, got {timeout!r}")
    env = raw.get("env") or {}
    if not isinstance(env, Mapping) or not all(isinstance(key, str) and isinstance(item, str | int | float) for key, item in env.items()):
        raise UpstreamConfigError(f"{where}.env: must map variable names to values")
    host = urlsplit(base_url).hostname or ""
    if not _is_this_machine(host):
        raise UpstreamConfigError(f"{where}: this server can only start an upstream on this machine; its base_url host is {host!r}")
    model = raw.get("model", "")
    if not isinstance(model, str):
        raise UpstreamConfigError(f"{where}.model: must be a model path or id")
    return LaunchSpec(engine, via, model, context, dict(options), None if timeout is None else float(timeout), {key: str(item) for key, item in env.items()})


def _known(raw: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    for name in raw:
        if name not in fields:
            raise UpstreamConfigError(f"{where}.{name}: unknown field (known: {', '.join(fields)})")


def _is_this_machine(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
