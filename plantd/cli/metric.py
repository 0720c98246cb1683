"""``plant metric``: channels, latest values and live samples of the metric module.

``list`` and ``latest`` ask ``org.plantd.module.Metric``; ``range`` reads its stored samples;
``watch`` follows the metric bus live. ``-o json`` prints JSON (``watch``: one per line).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from plantd.cli import client_settings
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.log import _fmt, parse_when
from plantd.cli.output import OutputFormat, emit

SERVICE = "org.plantd.module.Metric"  # plantd.metric.SERVICE
TOPIC_PREFIX = "org.plantd.Metric."

app = typer.Typer(help="Metric channels, latest values and live samples.", no_args_is_help=True)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
DEVICE_OPT = typer.Option(None, "--device", "-d", help="Device (globs allowed).")
CHANNEL_OPT = typer.Option(None, "--channel", "-c", help="Channel (globs allowed).")
COLUMNS = ("device", "channel", "value", "units", "time")


def _call(ctx: typer.Context, operation: str, doc: dict[str, Any]) -> Any:
    from plantd.client import SyncClient

    s = client_settings(ctx)
    with SyncClient(s.endpoint, timeout=s.timeout, retries=s.retries) as c:
        reply = c.call(SERVICE, operation, doc)
    return reply.get("data", reply) if isinstance(reply, dict) else reply


def _when(ts: Any) -> str:
    try:
        t = float(ts)
    except (TypeError, ValueError):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def _rows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "time": _when(s.get("timestamp"))} for s in samples]


@app.command("list")
def list_channels(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """Every known device/channel with its units and last value."""
    data = _call(ctx, "list", {})
    fmt = _fmt(ctx, output)
    channels = data.get("channels", [])
    if fmt is OutputFormat.table:
        emit(_rows(channels), fmt, columns=(*COLUMNS, "received"))
    else:
        emit(channels, fmt)


@app.command("latest")
def latest(
    ctx: typer.Context,
    device: str | None = DEVICE_OPT,
    channel: str | None = CHANNEL_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """The newest sample of each matching channel."""
    doc = {k: v for k, v in (("device", device), ("channel", channel)) if v}
    samples = _call(ctx, "latest", doc).get("samples", [])
    fmt = _fmt(ctx, output)
    if not samples and (device or channel):
        raise CliError("no matching channel", ExitCode.NOT_FOUND)
    if fmt is OutputFormat.table:
        emit(_rows(samples), fmt, columns=COLUMNS)
    else:
        emit(samples, fmt)


@app.command("range")
def range_(
    ctx: typer.Context,
    device: str = typer.Argument(..., help="Device."),
    channel: str = typer.Argument(..., help="Channel."),
    since: str | None = typer.Option("10m", "--since", help="From: 10m, 2h, epoch or ISO."),
    until: str | None = typer.Option(None, "--until", help="Until: epoch or ISO."),
    limit: int = typer.Option(1000, "--limit", "-n", min=0, max=10000),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Stored samples of one channel (oldest first)."""
    doc: dict[str, Any] = {"device": device, "channel": channel, "limit": limit}
    for key, value in (("since", parse_when(since)), ("until", parse_when(until))):
        if value is not None:
            doc[key] = value
    samples = _call(ctx, "range", doc).get("samples", [])
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.table:
        emit(_rows(samples), fmt, columns=COLUMNS)
    else:
        emit(samples, fmt)


def metric_bus_backend(explicit: str | None) -> str:
    import os

    if explicit:
        return explicit
    env = os.environ.get("PLANTD_CLIENT_METRIC_BUS", "").strip()
    if env:
        return env
    from plantd.config import load_settings
    from plantd.daemons.broker import BrokerDaemonSettings

    return load_settings(BrokerDaemonSettings, "broker").bus_endpoints("metric")[1]


@app.command("watch")
def watch(
    ctx: typer.Context,
    device: str | None = DEVICE_OPT,
    channel: str | None = CHANNEL_OPT,
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N samples."),
    idle: float | None = typer.Option(
        None, "--idle", min=0.01, help="Stop (exit 7) after this long without samples."
    ),
    bus: str | None = typer.Option(
        None, "--bus", help="Metric bus backend (default: PLANTD_CLIENT_METRIC_BUS or broker)."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print samples from the metric bus as they are published."""
    import asyncio

    fmt = _fmt(ctx, output)
    endpoint = metric_bus_backend(bus)
    raise typer.Exit(asyncio.run(_watch(endpoint, device, channel, count, idle, fmt)))


async def _watch(
    endpoint: str,
    device: str | None,
    channel: str | None,
    count: int | None,
    idle: float | None,
    fmt: OutputFormat,
) -> int:
    import fnmatch

    from plantd.client import Subscriber

    glob = device is not None and any(ch in device for ch in "*?[")
    topic = TOPIC_PREFIX + (device if device and not glob else "")
    sub = Subscriber(endpoint, topics=[topic])
    seen = 0
    try:
        while count is None or seen < count:
            try:
                _topic, doc = await sub.recv(timeout=idle)
            except TimeoutError:
                raise CliError(f"no sample within {idle:g}s", ExitCode.TIMEOUT) from None
            if not isinstance(doc, dict):
                continue
            if device and str(doc.get("device")) != device and not (
                glob and fnmatch.fnmatchcase(str(doc.get("device", "")), device)
            ):
                continue  # the topic prefix also matches longer device names
            if channel and not fnmatch.fnmatchcase(str(doc.get("channel", "")), channel):
                continue
            seen += 1
            if fmt is OutputFormat.table:
                value = doc.get("value")
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                line = (
                    f"{_when(doc.get('timestamp'))} {doc.get('device')} {doc.get('channel')}"
                    f" {shown} {doc.get('units') or ''}".rstrip()
                )
            else:
                line = json.dumps(doc, separators=(",", ":"), default=str)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    finally:
        sub.close()
    return ExitCode.OK
