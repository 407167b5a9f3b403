"""`jarvis doctor`: every check with what to do about a failure; exit code 0 only when all that
the configured models need passes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn

from cli import output
from cli.errors import CliError, ExitCode
from cli.state import JsonOption, command_state
from service.doctor import CHECKS, FAIL, Check, Context, passed

_MARKS = {"pass": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def doctor(
    context: typer.Context,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="decode a few tokens with llama.cpp (a few seconds)")] = True,
    as_json: JsonOption = False,
) -> None:
    """Check Python, the compiler, llama.cpp, vLLM, GPUs, model files, the port and the keys."""
    state = command_state(context, as_json)
    checks: list[Check] = []
    run = Context(env_file=state.env_file, decode=decode)
    with Progress(TextColumn("{task.description}"), BarColumn(), console=output.progress_console, transient=True) as progress:
        task = progress.add_task("checking", total=len(CHECKS))
        for title, check in CHECKS:
            progress.update(task, description=f"checking {title}")
            checks.extend(check(run))
            progress.advance(task)
    ok = passed(checks)
    if state.json:
        output.emit_json({"passed": ok, "checks": [check.as_dict() for check in checks]})
    else:
        output.table("jarvis doctor", ["", "check", "found", "what to do"], [[_MARKS[c.status], c.name, c.detail, c.fix] for c in checks])
    if not ok:
        failed = ", ".join(check.name for check in checks if check.status == FAIL)
        raise CliError(f"doctor: {failed} failed", ExitCode.FAILED)
