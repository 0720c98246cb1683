"""Broker commands: ``plant services``, ``plant workers``, ``plant call``, ``plant bus tail``."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from plantd.cli import client_settings, output_format
from plantd.cli.completion import service_names
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import (
    OutputFormat,
    decode_frame,
    emit,
    emit_frames,
    one_line,
    resolve_format,
)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
TIMEOUT_OPT = typer.Option(None, "--timeout", "-t", min=0.01, help="Reply timeout, seconds.")

TOPIC_OPT = typer.Option(None, "--topic", "-p", help="Topic prefix (repeatable).")

bus_app = typer.Typer(
    help="Watch the pub/sub buses (state, event, metric, log).", no_args_is_help=True
)


def _client(ctx: typer.Context, timeout: float | None = None) -> Any:
    from plantd.client import SyncClient

    s = client_settings(ctx, timeout=timeout)
    return SyncClient(s.endpoint, timeout=s.timeout, retries=s.retries)


def services(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """List services known to the broker (mmi.services, every page)."""
    from plantd.protocol.mmi import encode_service

    with _client(ctx) as c:
        doc = {"services": [encode_service(s) for s in c.services()]}
    emit(
        doc,
        output_format(ctx, output),
        columns=(
            "name",
            "workers",
            "idle",
            "busy",
            "queue",
            "requests",
            "failed",
        ),
    )


def workers(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """List workers connected to the broker (mmi.workers, every page)."""
    from plantd.protocol.mmi import encode_worker

    with _client(ctx) as c:
        doc = {"workers": [encode_worker(w) for w in c.workers()]}
    emit(doc, output_format(ctx, output))


def _payload(text: str | None) -> bytes:
    """The request document: JSON from the argument, ``-`` for stdin, ``{}`` when omitted."""
    if text is None:
        return b"{}"
    if text == "-":
        text = sys.stdin.read()
    try:
        json.loads(text)
    except ValueError as exc:
        raise CliError(f"invalid JSON payload: {one_line(exc)}", ExitCode.USAGE) from None
    return text.strip().encode()


def call(
    ctx: typer.Context,
    service: str = typer.Argument(
        ..., help="Service name, e.g. org.plantd.module.Echo.", autocompletion=service_names
    ),
    operation: str = typer.Argument(..., help="Operation, e.g. echo."),
    payload: str | None = typer.Argument(None, help="JSON document ('-' reads stdin)."),
    timeout: float | None = TIMEOUT_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Send [OPERATION, JSON] to SERVICE and print the reply document."""
    from plantd.client.reply import decode_document

    body = _payload(payload)
    if not service.strip() or not operation.strip():
        raise CliError("service and operation must not be empty", ExitCode.USAGE)
    with _client(ctx, timeout) as c:
        frames = c.request(service, operation.encode(), body)
    doc = decode_frame(frames[-1]) if frames else None
    if isinstance(doc, dict) and doc.get("success") is False:
        decode_document(frames)  # raises RequestRejected: the service said no
    emit_frames(frames, output_format(ctx, output))


@bus_app.command("tail")
def tail(
    ctx: typer.Context,
    bus: str = typer.Argument("log", help="state, event, metric or log."),
    topic: list[str] | None = TOPIC_OPT,
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N messages."),
    timeout: float | None = typer.Option(
        None, "--timeout", "-t", min=0.01, help="Stop (exit 7) if no message for this long."
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", "-e", help="Bus backend endpoint (default: from broker config)."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print messages published on a bus, one per line."""
    import asyncio

    from plantd.broker.settings import bus_endpoint
    from plantd.vocabulary import BUS_NAMES

    if bus not in BUS_NAMES:
        raise CliError(f"unknown bus {bus!r} (known: {', '.join(BUS_NAMES)})", ExitCode.USAGE)
    endpoint = bus_endpoint(bus, endpoint)
    fmt = resolve_format(output_format(ctx, output))
    raise typer.Exit(asyncio.run(_tail(endpoint, topic or [""], count, timeout, fmt)))


async def _tail(
    endpoint: str, topics: list[str], count: int | None, timeout: float | None, fmt: OutputFormat
) -> int:
    from plantd.cli.follow import follow_bus

    def show(topic: str, doc: Any) -> bool:
        if fmt is OutputFormat.json:
            line = json.dumps({"topic": topic, "data": doc}, separators=(",", ":"), default=str)
        else:
            data = doc if isinstance(doc, str) else json.dumps(doc, default=str)
            line = f"{topic} {data}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return True

    silence = f"no message on {endpoint}"
    return await follow_bus(endpoint, topics, show, count=count, idle=timeout, silence=silence)


def register(app: typer.Typer) -> None:
    app.command("services")(services)
    app.command("workers")(workers)
    app.command("call")(call)
    app.add_typer(bus_app, name="bus")
