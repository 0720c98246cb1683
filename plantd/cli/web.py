"""``plant web``: the Textual console (``plant tui``) served to browsers with textual-serve.

One code base: each browser tab runs its own ``plant tui`` process behind a websocket (the
same views, keys and confirmations), closing the tab ends it. Every asset is served from
this machine: textual-serve's page asks a public CDN for its font, so plantd serves a copy of
that page (``plantd/tui/web/app_index.html``) that takes the font from textual-serve's own
static files. Loopback only, like the proxy, until identity enforcement lands.
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from typing import Annotated

import typer

from plantd.cli.exitcodes import CliError, ExitCode
from plantd.vocabulary import WEB_PORT

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def web(
    port: Annotated[int, typer.Option("--port", "-p", help="HTTP port.")] = WEB_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Disable every write action in the console.")
    ] = False,
) -> None:
    """Serve the operator console to browsers (default http://127.0.0.1:8091)."""
    if host not in _LOOPBACK:
        raise CliError(
            f"--host {host}: plant web binds loopback only until identity enforcement lands",
            ExitCode.USAGE,
        )
    if not 0 < port < 65536:
        raise CliError(f"--port {port}: expected 1-65535", ExitCode.USAGE)
    try:
        from textual_serve.server import Server
    except ImportError:
        raise CliError("plant web needs textual-serve (pip install textual-serve)") from None
    command = [sys.executable, "-m", "plantd.cli.main", "tui"]
    if read_only:
        command.append("--read-only")
    templates = resources.files("plantd.tui").joinpath("web")
    server = Server(
        shlex.join(command),
        host=host,
        port=port,
        title="plantd console",
        templates_path=str(templates),
    )
    server.serve()
