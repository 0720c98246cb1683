"""Shell completion: ``plant completion SHELL`` prints the script, names complete themselves.

Typer's own ``--install-completion`` installs the same script. The completers run only when
the shell asks (``_PLANT_COMPLETE`` set), so they cost a plain command nothing.
"""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from plantd.cli.output import OutputFormat

#: the variable Typer's completion scripts set when they ask ``plant`` for candidates
COMPLETE_VAR = "_PLANT_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def daemon_names(incomplete: str) -> list[str]:
    """Daemons, installed modules and ``all`` starting with ``incomplete``."""
    from plantd import daemons

    names = ["all", *daemons.available(), *sorted(daemons.installed())]
    return [name for name in dict.fromkeys(names) if name.startswith(incomplete)]


SHELL_ARG = typer.Argument(..., help="bash, zsh or fish.")
OUTPUT_OPT = typer.Option(
    None, "--output", "-o", help="json: {shell, script}; default: the script itself."
)


def completion(shell: Shell = SHELL_ARG, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """Print the completion script for SHELL (e.g. plant completion bash > ~/.plant.bash)."""
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name="plant", complete_var=COMPLETE_VAR, shell=shell)
    if output is OutputFormat.json:
        print(json.dumps({"shell": shell.value, "script": script}))
    else:
        print(script)


def register(app: typer.Typer) -> None:
    app.command("completion")(completion)
