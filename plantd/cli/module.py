"""``plant module list|start|stop|new``: modules join and leave a running system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from plantd.cli import output_format
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, info

module_app = typer.Typer(
    help="Installed modules (plantd.modules entry points): list, start, stop, scaffold.",
    no_args_is_help=True,
)

WAIT_OPT = typer.Option(20.0, "--wait", min=0.1, help="Seconds to wait for health / exit.")
OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
DIR_OPT = typer.Option(Path("."), "--dir", "-d", help="Where to create it.")


def _known(name: str) -> str:
    from plantd.daemons import installed

    if name not in installed():
        raise CliError(
            f"no module named {name!r} is installed (see: plant module list)", ExitCode.NOT_FOUND
        )
    return name


@module_app.command("list")
def list_modules(
    ctx: typer.Context,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Modules that installed packages provide, and whether each one runs."""
    from plantd.daemons import installed, process

    rows: list[dict[str, Any]] = []
    for name, target in sorted(installed().items()):
        st = process.status(name, probe=False).to_dict()
        rows.append({"name": name, "entry_point": target, "state": st["state"], "pid": st["pid"]})
    emit(rows, output_format(ctx, output), columns=("name", "state", "pid", "entry_point"))


@module_app.command("start")
def start(name: str = typer.Argument(..., help="Module name."), wait: float = WAIT_OPT) -> None:
    """Start a module in the background; it registers with the running broker (as its own
    principal, created here the first time)."""
    from plantd.cli.daemon import _start
    from plantd.cli.identity import ensure_module_principal

    ensure_module_principal(_known(name), _service_of(name))
    raise typer.Exit(_start([name], wait, quiet_running=False))


def _service_of(name: str) -> str:
    """The MDP service module ``name`` serves (its settings may rename it)."""
    from plantd.config import load_settings
    from plantd.daemons import load

    cls = load(name)
    return cls(load_settings(cls.settings_class, name)).service_name()


@module_app.command("stop")
def stop(name: str = typer.Argument(..., help="Module name."), wait: float = WAIT_OPT) -> None:
    """Stop a module; the rest of the system keeps running."""
    from plantd.cli.daemon import _stop

    raise typer.Exit(_stop([_known(name)], wait))


@module_app.command("new")
def new(
    name: str = typer.Argument(..., help="Module name: lowercase letters, digits, _."),
    directory: Path = DIR_OPT,
) -> None:
    """Scaffold an installable module package with a working operation and a test."""
    from plantd.scaffold import ScaffoldError, write

    try:
        target = write(name, directory)
    except ScaffoldError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    info(f"created {target}: pip install -e {target} && plant module start {name}")
    print(target)


def register(app: typer.Typer) -> None:
    app.add_typer(module_app, name="module")
