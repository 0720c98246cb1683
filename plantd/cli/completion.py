"""Shell completion: ``plant completion SHELL`` prints the script, names complete themselves.

Typer's own ``--install-completion`` installs the same script. The completers run only when
the shell asks (``_PLANT_COMPLETE`` set), so they cost a plain command nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import typer

from plantd.cli.output import OutputFormat

#: the variable Typer's completion scripts set when they ask ``plant`` for candidates
COMPLETE_VAR = "_PLANT_COMPLETE"
#: a shell waits for the candidates: ask the broker this long at most, then offer nothing
ASK_TIMEOUT = 0.5
#: candidates asked of a service at most (one page)
ASK_LIMIT = 200


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def daemon_names(incomplete: str) -> list[str]:
    """Daemons, installed modules and ``all`` starting with ``incomplete``."""
    from plantd import daemons

    names = ["all", *daemons.available(), *sorted(daemons.installed())]
    return [name for name in dict.fromkeys(names) if name.startswith(incomplete)]


def _endpoint(ctx: typer.Context | None) -> str | None:
    """``-e`` of the command line being completed (the root callback has not run yet)."""
    root = ctx.find_root() if ctx is not None else None
    value = root.params.get("endpoint") if root is not None else None
    return value if isinstance(value, str) else None


def _ask(
    ctx: typer.Context | None, names: Callable[[Any], Iterable[str]], incomplete: str
) -> list[str]:
    """``names(sync_client)`` that start with ``incomplete``; nothing when the broker does not
    answer within :data:`ASK_TIMEOUT` (completion must never hang a shell)."""
    from plantd.cli import client_settings
    from plantd.client import SyncClient

    try:
        s = client_settings(ctx, endpoint=_endpoint(ctx), timeout=ASK_TIMEOUT)
        with SyncClient(s.endpoint, timeout=ASK_TIMEOUT, retries=0) as client:
            return sorted(n for n in names(client) if n.startswith(incomplete))
    except Exception:
        return []


def service_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Services the broker knows (mmi.services), for ``plant call``."""
    return _ask(ctx, lambda c: (s.name for s in c.services()), incomplete)


def _state_page(client: Any, operation: str, doc: dict[str, Any], field: str) -> list[Any]:
    from plantd.vocabulary import STATE_SERVICE

    reply = client.call(STATE_SERVICE, operation, {**doc, "limit": ASK_LIMIT})
    data = reply.get("data") if isinstance(reply, dict) else None
    return list(data.get(field) or []) if isinstance(data, dict) else []


def scope_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """State scopes starting with ``incomplete`` (one page asked with that prefix)."""
    return _ask(
        ctx, lambda c: _state_page(c, "list-scopes", {"prefix": incomplete}, "scopes"), incomplete
    )


def key_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Keys of the scope given by ``--scope`` (else the client's default scope)."""
    from plantd.cli import client_settings

    scope = ctx.params.get("scope") or client_settings(ctx).scope
    doc = {"scope": scope, "prefix": incomplete, "values": False}
    return _ask(
        ctx,
        lambda c: (
            k["key"] if isinstance(k, dict) else k for k in _state_page(c, "list-keys", doc, "keys")
        ),
        incomplete,
    )


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
