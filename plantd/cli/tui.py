"""`plant tui`: start the Textual operator console.

Textual is imported inside the function, so registering this command costs the CLI nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer


def _root_context() -> object | None:
    """The running click context, to honour `plant -e ENDPOINT -t SECONDS tui`."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # typer layout changed: the command's own flags still work
        return None
    return get_current_context(silent=True)


def tui(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", "-e", help="Broker endpoint (env PLANTD_CLIENT_ENDPOINT)."),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Disable every write action (state, calls).")
    ] = False,
) -> None:
    """Terminal operator console: overview, state, logs and calls (F1 for keys)."""
    from plantd.tui.source import LiveSource, SourceSettings

    endpoint_given = endpoint
    timeout: float | None = None
    try:
        from plantd.cli import client_settings

        settings = client_settings(_root_context(), endpoint=endpoint)
        endpoint_given, timeout = settings.endpoint, settings.timeout
    except Exception:  # config trouble: fall back to env and defaults
        pass
    source_settings = SourceSettings.from_env(endpoint_given)
    if timeout is not None:
        # keep polls snappy: the banner must appear within a few seconds of broker loss
        source_settings = SourceSettings(
            source_settings.endpoint,
            min(timeout, 3.0),
            source_settings.state_bus,
            source_settings.log_bus,
        )

    from plantd.tui.app import PlantApp

    PlantApp(LiveSource(source_settings), read_only=read_only).run()
