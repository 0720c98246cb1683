"""``plant identity token create|list|revoke``: bearer API tokens for the proxy.

Tokens live in this host's keyring (``$PLANTD_HOME/identity/tokens.db``, hashed; see
:mod:`plantd.identity.tokens`). ``create`` prints the token once: store it then. A token is
issued to an active principal of the registry (``plant identity init`` first). Exit codes:
2 bad name/duration/id, 4 unknown principal or token id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, info

if TYPE_CHECKING:
    from plantd.identity.tokens import Token, TokenStore
    from plantd.security.keys import Keyring

app = typer.Typer(help="Bearer API tokens for the HTTP proxy.", no_args_is_help=True)
OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
COLUMNS = ("id", "principal", "state", "created", "expires", "revoked_at")


def _keyring() -> Keyring:
    from plantd.config import plantd_home
    from plantd.security.keys import Keyring

    return Keyring.at_home(plantd_home().root)


@contextmanager
def _store() -> Iterator[TokenStore]:
    from plantd.identity.tokens import TokenStore

    with TokenStore(_keyring()) as store:
        yield store


def _fmt(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    from plantd.cli.log import _fmt as fmt

    return fmt(ctx, output)


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat("T", "seconds")


def _doc(token: Token, fmt: OutputFormat) -> dict[str, Any]:
    doc = token.to_json(time.time())
    if fmt is OutputFormat.table:
        doc.update(
            created=_when(token.created),
            expires=_when(token.expires),
            revoked_at=_when(token.revoked_at),
        )
    return doc


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The principal the token acts for."),
    expires: str | None = typer.Option(
        None, "--expires", "-e", help="Lifetime: 90d, 12h, 30m, 3600 (seconds); none = never."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Issue a token for principal NAME; the token is printed once."""
    from plantd.identity.principals import Registry
    from plantd.identity.tokens import parse_duration

    lifetime = parse_duration(expires) if expires is not None else None
    ring = _keyring()
    if not ring.registry.exists():
        raise CliError(
            f"{ring.root}: no identity yet (run 'plant identity init')", ExitCode.NOT_FOUND
        )
    with Registry(ring) as reg:
        principal = reg.get(name)
    if principal.state != "active":
        raise CliError(f"principal {name!r} is {principal.state}", ExitCode.CONFLICT)
    with _store() as store:
        token, text = store.create(name, lifetime)
    info("store the token now: it is not shown again")
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.raw:
        emit(text, fmt)
    else:
        emit({**_doc(token, fmt), "token": text}, fmt)


@app.command("list")
def list_(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only the tokens of this principal."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Every token (never its secret): id, principal, state, expiry."""
    with _store() as store:
        tokens = store.list_tokens(name)
    fmt = _fmt(ctx, output)
    emit([_doc(t, fmt) for t in tokens], fmt, columns=COLUMNS)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: str = typer.Argument(..., metavar="ID", help="Token id (from 'token list')."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Revoke a token: the proxy refuses it within a second."""
    with _store() as store:
        token = store.revoke(token_id)
    fmt = _fmt(ctx, output)
    emit(_doc(token, fmt), fmt)


__all__ = ["app"]
