"""The `jarvis` command: installed with the project as `.venv/bin/jarvis` (pyproject.toml),
also `./run.sh cli ...` and `python -m cli`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from cli import output
from cli.add_model import add_model
from cli.doctor import doctor
from cli.errors import CliError, ExitCode
from cli.runtime import backend_app, load, models, status, switch, unload
from cli.state import JsonOption, State, command_state, default_env_file
from service.vllm_command import CommandParseError, parse_vllm_command

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

app = typer.Typer(
    name="jarvis",
    help="Operate a Jarvis LLM Proxy: its models, engines and health. Exit codes: 0 ok, 1 failed, "
    "2 bad input, 3 no server, 4 admin API refused.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    context: typer.Context,
    url: Annotated[str | None, typer.Option(envvar="JARVIS_URL", help="the server; default: JARVIS_HOST and JARVIS_PORT of .env")] = None,
    admin_key: Annotated[str | None, typer.Option(help="the admin key; default: JARVIS_ADMIN_KEY of .env")] = None,
    env_file: Annotated[Path | None, typer.Option(help="the .env to read; default: ./.env, else the project's")] = None,
) -> None:
    context.obj = State(env_file=env_file or default_env_file(), url=url, admin_key=admin_key)


def parse_command(
    context: typer.Context,
    command: Annotated[str, typer.Argument(help="a `vllm serve ...` command line, quoted")],
    as_json: JsonOption = False,
) -> None:
    """Turn a `vllm serve` command into a models.yaml entry and .env lines."""
    state = command_state(context, as_json)
    try:
        parsed = parse_vllm_command(command)
    except CommandParseError as error:
        raise CliError(str(error), ExitCode.BAD_INPUT) from None
    if state.json:
        output.emit_json({"entry": parsed.entry, "env": parsed.env_lines, "unmapped": parsed.unmapped})
        return
    output.console.print("# models.yaml")
    output.console.print(yaml.safe_dump({"models": [parsed.entry]}, sort_keys=False).rstrip(), markup=False)
    output.console.print("\n# .env")
    output.console.print("\n".join(parsed.env_lines), markup=False)
    if parsed.unmapped:
        output.console.print(f"\n# not mapped (no equivalent here): {' '.join(parsed.unmapped)}", markup=False)


app.command()(status)
app.command()(models)
app.command()(load)
app.command()(unload)
app.command()(switch)
app.add_typer(backend_app, name="backend")
app.command("add-model")(add_model)
app.command()(doctor)
app.command("parse-command")(parse_command)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except CliError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(int(error.code))
    except click_exceptions.NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help())
        sys.exit(int(ExitCode.BAD_INPUT))
    except click_exceptions.UsageError as error:
        hint = f" (see: {error.ctx.command_path} --help)" if error.ctx else ""
        typer.echo(f"error: {error.format_message().replace('Value error, ', '')}{hint}", err=True)
        sys.exit(int(ExitCode.BAD_INPUT))
    except click_exceptions.ClickException as error:
        typer.echo(f"error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
