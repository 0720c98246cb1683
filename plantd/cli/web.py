"""``plant web``: the Textual console (``plant tui``) served to browsers with textual-serve.

One code base: each browser tab runs its own ``plant tui`` process behind a websocket (the
same views, keys and confirmations), closing the tab ends it (:mod:`plantd.tui.web.server`).
Every asset is served from this machine: textual-serve's page asks a public CDN for its font,
so plantd serves a copy of that page (``plantd/tui/web/app_index.html``) that takes the font
from textual-serve's own static files. Once API tokens exist, a browser logs in with one
(:mod:`plantd.tui.web.auth`). Loopback only, like the proxy, until broker security lands.
"""

from __future__ import annotations

import sys
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
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token",
            help="Ask every browser for an API token, even before any is issued.",
        ),
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
        from plantd.tui.web.server import ConsoleServer
    except ImportError:
        raise CliError("plant web needs textual-serve (pip install textual-serve)") from None
    from plantd.config import plantd_home
    from plantd.security.keys import Keyring
    from plantd.tui.web.auth import WebAuth

    command = [sys.executable, "-m", "plantd.cli.main", "tui"]
    if read_only:
        command.append("--read-only")
    auth = WebAuth(Keyring.at_home(plantd_home().root).root, require=require_token)
    server = ConsoleServer(command, host=host, port=port, auth=auth, title="plantd console")
    server.serve()
