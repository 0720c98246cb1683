"""The ``plant`` command line. Submodules import heavy libraries inside commands only.

Command groups written elsewhere (``plantd.cli.state``, ``plantd.cli.tui``) read the global
options through :func:`cli_state` / :func:`client_settings` so ``-e``, ``-t`` and ``-o``
behave the same in every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantd.config import ClientSettings


@dataclass
class CliState:
    """Global options given before the command (``plant -e ENDPOINT -t 2 -o json ...``)."""

    endpoint: str | None = None
    timeout: float | None = None
    output: str | None = None


def cli_state(ctx: Any) -> CliState:
    """The global options of the invocation (defaults when called outside ``plant``)."""
    root = ctx.find_root() if ctx is not None else None
    obj = getattr(root, "obj", None)
    return obj if isinstance(obj, CliState) else CliState()


def client_settings(
    ctx: Any, endpoint: str | None = None, timeout: float | None = None
) -> ClientSettings:
    """Client settings: defaults -> file -> ``PLANTD_CLIENT_*`` -> global flags -> command flags."""
    from plantd.config import load_client_settings

    state = cli_state(ctx)
    overrides: dict[str, Any] = {
        "endpoint": endpoint if endpoint is not None else state.endpoint,
        "timeout": timeout if timeout is not None else state.timeout,
    }
    return load_client_settings(overrides)


def output_format(ctx: Any, output: Any = None) -> Any:
    """The command's ``-o`` if given, else the global one (resolved later by output.emit)."""
    return output if output is not None else cli_state(ctx).output
