"""Commands about the running server: status, models, load, unload, switch, backend."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from backends import choose_engine, machine_report, preferred_engine
from cli import output
from cli.errors import CliError, ExitCode
from cli.state import EngineChoice, EngineKindChoice, JsonOption, State, command_state
from service.registry_edits import registry_file_for, registry_source

EngineArgument = Annotated[EngineChoice, typer.Argument(help="the engine kind", show_default=False)]
AliasArgument = Annotated[str, typer.Argument(help="the model's alias (models.yaml `alias`)")]


def _load_timeout(state: State) -> float:
    return state.settings().model_start_timeout + 120 if state.url is None else 1800


def status(context: typer.Context, as_json: JsonOption = False) -> None:
    """Engine, models and their state, slots and queue, memory, uptime and health stage."""
    state = command_state(context, as_json)
    connection = state.connection()
    health = connection.health()
    if health is None:
        if state.json:
            output.emit_json({"running": False, "url": connection.url})
        raise CliError(f"no Jarvis server answers at {connection.url}; start it with ./run.sh", ExitCode.NO_SERVER)
    admin = connection.call("GET", "/admin/status")
    if state.json:
        output.emit_json({"running": True, "url": connection.url, "health": health, **admin})
        return
    output.facts(
        f"Jarvis at {connection.url}",
        [
            ("health", health.get("status") if health.get("status") == "ok" else f"{health.get('status')}: {health.get('reason')}"),
            ("stage", admin.get("stage")),
            ("engine", f"{admin['engine']} ({admin['engine_choice']})"),
            ("fallback", admin.get("fallback")),
            ("uptime", f"{admin['uptime_seconds']:.0f} s"),
            ("memory", output.mib(admin.get("process_rss_bytes"))),
            ("registry", f"{admin['registry']['path']} ({admin['registry']['source']})"),
        ],
    )
    output.table(
        "Models",
        ["alias", "state", "engine", "in flight", "busy slots", "queue", "context", "chat format", "loaded in"],
        [_status_row(model) for model in admin["models"]],
    )
    upstreams = [_upstream_row(model, upstream) for model in admin["models"] for upstream in (model.get("engine_stats") or {}).get("upstreams", [])]
    if upstreams:
        output.table("Upstreams", ["model", "upstream", "flavour", "health", "in flight", "requests", "failures", "TTFT", "managed"], upstreams)
    fallbacks = [(model["alias"], model["last_fallback"]) for model in admin["models"] if model.get("last_fallback")]
    for alias, last in fallbacks:
        output.note(f"{alias}: {last['count']} requests served by its fallback {last['to']}; the last because {last['reason']}")


def _upstream_row(model: dict[str, Any], upstream: dict[str, Any]) -> list[object]:
    reason = str(upstream["reason"]).replace(f"upstream {upstream['name']} ", "")
    health = "up" if upstream["healthy"] else f"down: {reason}"
    ttft = f"{upstream['ttft_seconds'] * 1000:.0f} ms" if upstream.get("ttft_seconds") is not None else None
    managed = upstream.get("managed")
    started = f"{managed['state']} (pid {managed['pid']}, {managed['restarts']} restarts)" if managed else None
    return [model["alias"], upstream["name"], upstream["flavour"], health, upstream["in_flight"], upstream["requests"], upstream["failures"], ttft, started]


def _status_row(model: dict[str, Any]) -> list[object]:
    stats = model.get("engine_stats") or {}
    busy = None
    if "busy_slots" in stats:  # a remote model has no slots here: its requests in flight upstream
        busy = f"{stats['busy_slots']}/{stats['parallel']}" if stats.get("parallel") else str(stats["busy_slots"])
    state = model["state"] if not model.get("failure") else f"{model['state']}: {model['failure']}"
    loaded = f"{model['load_seconds']:.1f} s" if model.get("load_seconds") is not None else None
    return [model["alias"], state, model["engine"], model["in_flight"], busy, stats.get("queue_length"), model.get("context_length"), model.get("chat_format"), loaded]


def models(context: typer.Context, as_json: JsonOption = False) -> None:
    """The registry's models: from the running server, else from the files."""
    state = command_state(context, as_json)
    connection = state.connection()
    if connection.health() is not None:
        listing = connection.call("GET", "/admin/models")
        listing = {"server": connection.url, **listing}
    else:
        settings = state.settings()
        listing = {
            "server": None,
            "registry": {"path": str(registry_file_for(settings).path), "source": registry_source(settings)},
            "models": [{"alias": entry.alias, "state": "no server", "engine": entry.engine, "entry": entry.document()} for entry in state.entries()],
        }
    if state.json:
        output.emit_json(listing)
        return
    where = f"server {listing['server']}" if listing["server"] else "no server running: read from the files"
    output.console.print(f"Registry: {listing['registry']['path']} ({listing['registry']['source']}); {where}")
    rows = []
    for model in listing["models"]:
        entry = model["entry"]
        rows.append([model["alias"], entry.get("aliases"), model["state"], model["engine"], entry.get("model") or "(packaged gemma-3-270m)", entry.get("context_size"), entry.get("options")])
    output.table(None, ["alias", "also", "state", "engine", "model", "context", "options"], rows)


def load(context: typer.Context, alias: AliasArgument, as_json: JsonOption = False) -> None:
    """Load a model now (a request for it would load it too)."""
    state = command_state(context, as_json)
    connection = state.connection()
    connection.require_server()
    with output.working(f"loading {alias}"):
        model = connection.call("POST", f"/admin/models/{alias}/load", timeout=_load_timeout(state))
    if state.json:
        output.emit_json(model)
        return
    output.console.print(f"{model['alias']} loaded on {model['engine']} in {model['load_seconds']:.1f} s")
    if model.get("fallback"):
        output.console.print(f"fallback: {model['fallback']}")


def unload(context: typer.Context, alias: AliasArgument, as_json: JsonOption = False) -> None:
    """Unload a model once its in-flight requests finish, returning its memory."""
    state = command_state(context, as_json)
    connection = state.connection()
    connection.require_server()
    with output.working(f"unloading {alias}"):
        model = connection.call("POST", f"/admin/models/{alias}/unload", timeout=_load_timeout(state))
    if state.json:
        output.emit_json(model)
        return
    output.console.print(f"{model['alias']} {model['state']}; the server's memory is now {output.mib(model['process_rss_bytes'])}")


def switch(
    context: typer.Context,
    engine: EngineArgument,
    model: Annotated[str | None, typer.Option("--model", help="the model's alias; default: the default model")] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a model on another engine until the next start (in-flight requests finish first)."""
    _switch(command_state(context, as_json), engine.value, model)


def _switch(state: State, engine: str, model: str | None) -> None:
    connection = state.connection()
    connection.require_server()
    with output.working(f"switching {model or 'the default model'} to {engine}"):
        answer = connection.call("POST", "/admin/engine", body={"engine": engine, "model": model}, timeout=_load_timeout(state))
    if state.json:
        output.emit_json(answer)
    else:
        output.console.print(f"{answer['model']}: {answer['from']} -> {answer['to']} ({answer['reason']}); {answer['state']}")
    if answer["state"] != "loaded":
        raise CliError(f"{answer['model']} is {answer['state']}: {answer.get('failure')}", ExitCode.FAILED)


backend_app = typer.Typer(help="The engines this machine can run, and the one in use.", no_args_is_help=True)


@backend_app.command("status")
def backend_status(context: typer.Context, as_json: JsonOption = False) -> None:
    """Which engines can run here and why not, their builds, GPUs, and the current choice."""
    state = command_state(context, as_json)
    connection = state.connection()
    if connection.health() is not None:
        report = {"server": connection.url, **connection.call("GET", "/admin/backends", timeout=180)}
    else:
        settings = state.settings()
        engine, reason = choose_engine(settings.inference_engine)
        choice: dict[str, object] = {"setting": settings.inference_engine, "engine": engine, "reason": reason}
        if engine == "fallback":
            choice["preferred"], choice["preferred_reason"] = preferred_engine(settings.preferred_engine)
        report = {"server": None, **machine_report(settings.cache_dir), "choice": choice}
    if state.json:
        output.emit_json(report)
        return
    rows = []
    for engine_report in report["engines"]:
        build = engine_report["build"]
        details = ", ".join(
            str(part) for part in (build.get("distribution"), build.get("version"), build.get("build") or build.get("build_profile")) if part
        )
        features = ", ".join(build.get("cpu_features") or [])
        rows.append([engine_report["name"], engine_report["available"], engine_report["reason"], details, features])
    output.table("Engines", ["engine", "runs here", "why", "build", "CPU features"], rows)
    gpus = [f"{gpu['name']} ({gpu['memory_total_mib']} MiB, {gpu['memory_used_mib']} used)" for gpu in report["gpus"]]
    choice = report["choice"]
    output.facts(
        None,
        [
            ("GPUs", ", ".join(gpus) or "none"),
            ("setting", f"JARVIS_INFERENCE_ENGINE={choice['setting']}"),
            ("in use", f"{choice['engine']} ({choice['reason']})" + ("" if report["server"] else "; no server running")),
            ("preferred", choice.get("preferred")),
            ("fallback", choice.get("fallback")),
        ],
    )


@backend_app.command("switch")
def backend_switch(context: typer.Context, engine: EngineArgument, as_json: JsonOption = False) -> None:
    """Serve the default model on ENGINE until the next start."""
    _switch(command_state(context, as_json), engine.value, None)


@backend_app.command("auto")
def backend_auto(context: typer.Context, as_json: JsonOption = False) -> None:
    """Serve the default model on the engine the auto rule picks (vLLM with a GPU, else llama.cpp)."""
    _switch(command_state(context, as_json), "auto", None)


@backend_app.command("options")
def backend_options(
    context: typer.Context,
    engine: Annotated[EngineKindChoice | None, typer.Argument(help="one engine kind; default: all")] = None,
    as_json: JsonOption = False,
) -> None:
    """The options each engine kind takes (models.yaml `options:`, JARVIS_* settings, admin API)."""
    from backends import ENGINE_KINDS
    from service.settings import env_name

    state = command_state(context, as_json)
    kinds = [ENGINE_KINDS[engine.value]] if engine else list(ENGINE_KINDS.values())
    listing = {
        kind.name: [{**option.describe(), "setting": env_name(kind.setting_name(option))} for option in kind.options] for kind in kinds
    }
    if state.json:
        output.emit_json(listing)
        return
    for name, options in listing.items():
        rows = [[option["name"], option["type"], option["default"], option.get("range"), option["setting"], option["description"]] for option in options]
        output.table(f"{name} options", ["option", "type", "default", "range", "setting", "meaning"], rows)
