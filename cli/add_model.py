"""`jarvis add-model SOURCE`: read what the model says about itself, propose an entry, write it
(through the admin API when a server runs, else into the registry file)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import output
from cli.errors import CliError, ExitCode
from cli.state import EngineChoice, JsonOption, State, command_state
from service.errors import ServiceError
from service.model_inspect import Proposal, SourceError, inspect_source
from service.model_registry import RegistryError
from service.registry_edits import create_entry, registry_file_for


def add_model(
    context: typer.Context,
    source: Annotated[str, typer.Argument(help="a GGUF file, an HF model folder, an HF model id, or a pasted `vllm serve ...` command")],
    alias: Annotated[str | None, typer.Option(help="the name requests use; default: from the model's name")] = None,
    engine: Annotated[EngineChoice | None, typer.Option(help="default: llama_cpp for GGUF, vllm for HF models")] = None,
    chat_format: Annotated[str | None, typer.Option(help="auto, chatml, llama3, mistral, gemma or a template file")] = None,
    context_size: Annotated[int | None, typer.Option(min=256, help="tokens of context; default: the model's, at most JARVIS_CONTEXT_SIZE")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the proposed entry; write nothing")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a model to the registry from what its files say about it."""
    state = command_state(context, as_json)
    settings = state.settings()
    try:
        proposal = inspect_source(
            source, default_context=settings.context_size, alias=alias, engine=engine.value if engine else None,
            chat_format=chat_format, context_size=context_size,
        )
    except SourceError as error:
        raise CliError(str(error), ExitCode.BAD_INPUT) from None
    result: dict[str, Any] = {"entry": proposal.entry, "detected": proposal.detected, "notes": proposal.notes, "written": False}
    if not dry_run:
        result.update(_write(state, proposal))
    if state.json:
        output.emit_json(result)
        return
    _show(proposal, result)


def _write(state: State, proposal: Proposal) -> dict[str, Any]:
    connection = state.connection()
    if connection.health() is not None:
        with output.working(f"adding {proposal.entry['alias']} to the server's registry"):
            answer = connection.call("POST", "/admin/models", body=proposal.entry)
        return {"written": True, "through": connection.url, "registry": answer["registry"], "warnings": answer["warnings"]}
    settings = state.settings()
    try:
        edit = create_entry(registry_file_for(settings), state.entries(), proposal.entry)
    except RegistryError as error:
        raise CliError(str(error), ExitCode.BAD_INPUT) from None
    except ServiceError as error:
        raise CliError(error.message, ExitCode.BAD_INPUT) from None
    return {"written": True, "through": None, "registry": {"path": str(edit.path), "created": edit.created_file}, "warnings": []}


def _show(proposal: Proposal, result: dict[str, Any]) -> None:
    detected = proposal.detected
    output.facts(
        "Read from the source",
        [(name.replace("_", " "), value) for name, value in detected.items() if name not in ("format",)],
    )
    output.facts("Entry", [(name, value) for name, value in proposal.entry.items() if name != "source"])
    for line in [*proposal.notes, *result.get("warnings", [])]:
        output.console.print(f"note: {line}")
    if not result["written"]:
        output.console.print("dry run: nothing written")
        return
    registry = result["registry"]
    if result["through"]:
        output.console.print(f"added {proposal.entry['alias']} through {result['through']}; registry {registry['path']}")
        if registry.get("note"):
            output.console.print(registry["note"])
    else:
        created = " (a new file)" if registry.get("created") else ""
        output.console.print(f"no server running: wrote {proposal.entry['alias']} to {registry['path']}{created}; the next start serves it")
