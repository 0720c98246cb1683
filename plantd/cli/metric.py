"""``plant metric``: channels, latest values and live samples of the metric module.

``list`` and ``latest`` ask ``org.plantd.module.Metric``; ``range`` reads its stored samples;
``watch`` follows the metric bus live. ``-o json`` prints JSON (``watch``: one per line).
``list``, ``latest`` and ``range`` follow the module's pages and print each as it arrives (a
JSON array written item by item; a table per page).
"""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from typing import Any

import typer

from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.log import _fmt, follow_pages, parse_when
from plantd.cli.output import OutputFormat, emit
from plantd.vocabulary import METRIC_SERVICE, METRIC_TOPIC_PREFIX

SERVICE = METRIC_SERVICE
TOPIC_PREFIX = METRIC_TOPIC_PREFIX

app = typer.Typer(help="Metric channels, latest values and live samples.", no_args_is_help=True)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
DEVICE_OPT = typer.Option(None, "--device", "-d", help="Device (globs allowed).")
CHANNEL_OPT = typer.Option(None, "--channel", "-c", help="Channel (globs allowed).")
COLUMNS = ("device", "channel", "value", "units", "time")


def _when(ts: Any) -> str:
    try:
        t = float(ts)
    except (TypeError, ValueError):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def _rows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "time": _when(s.get("timestamp"))} for s in samples]


def _emit_pages(
    pages: Iterable[list[dict[str, Any]]], fmt: OutputFormat, columns: Sequence[str]
) -> int:
    """Print pages as they come: a table per page, or one JSON array (as ``emit`` writes it)
    item by item. Returns the number of items."""
    out = sys.stdout
    count = 0
    for page in pages:
        if fmt is OutputFormat.table:
            if page:
                emit(_rows(page), fmt, columns=columns)
        else:
            for item in page:
                text = json.dumps(item, indent=2, ensure_ascii=False, default=str)
                out.write(("[\n" if count == 0 else ",\n") + textwrap.indent(text, "  "))
                count += 1
            out.flush()
            continue
        count += len(page)
    if fmt is not OutputFormat.table:
        out.write("\n]\n" if count else "[]\n")
        out.flush()
    return count


@app.command("list")
def list_channels(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """Every known device/channel with its units and last value."""
    fmt = _fmt(ctx, output)
    pages = follow_pages(ctx, SERVICE, "list", {}, "channels")
    _emit_pages(pages, fmt, (*COLUMNS, "received"))


@app.command("latest")
def latest(
    ctx: typer.Context,
    device: str | None = DEVICE_OPT,
    channel: str | None = CHANNEL_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """The newest sample of each matching channel."""
    doc = {k: v for k, v in (("device", device), ("channel", channel)) if v}
    fmt = _fmt(ctx, output)
    pages = iter(follow_pages(ctx, SERVICE, "latest", doc, "samples"))
    first = next(pages, [])
    if not first and (device or channel):
        raise CliError("no matching channel", ExitCode.NOT_FOUND)
    _emit_pages(itertools.chain([first], pages), fmt, COLUMNS)


@app.command("range")
def range_(
    ctx: typer.Context,
    device: str = typer.Argument(..., help="Device."),
    channel: str = typer.Argument(..., help="Channel."),
    since: str | None = typer.Option("10m", "--since", help="From: 10m, 2h, epoch or ISO."),
    until: str | None = typer.Option(None, "--until", help="Until: epoch or ISO."),
    limit: int = typer.Option(
        1000, "--limit", "-n", min=0, help="At most N samples (fetched page by page)."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Stored samples of one channel (oldest first)."""
    doc: dict[str, Any] = {"device": device, "channel": channel}
    for key, value in (("since", parse_when(since)), ("until", parse_when(until))):
        if value is not None:
            doc[key] = value
    fmt = _fmt(ctx, output)
    _emit_pages(follow_pages(ctx, SERVICE, "range", doc, "samples", limit), fmt, COLUMNS)


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
        None, "--bus", help="Metric bus subscribe side (PLANTD_CLIENT_METRIC_BUS_SUB or broker)."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print samples from the metric bus as they are published."""
    import asyncio

    fmt = _fmt(ctx, output)
    from plantd.broker.settings import bus_endpoint

    endpoint = bus_endpoint("metric", bus)
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

    from plantd.cli.follow import follow_bus

    glob = device is not None and any(ch in device for ch in "*?[")
    topic = TOPIC_PREFIX + (device if device and not glob else "")

    def show(_topic: str, doc: Any) -> bool:
        if not isinstance(doc, dict):
            return False
        if (
            device
            and str(doc.get("device")) != device
            and not (glob and fnmatch.fnmatchcase(str(doc.get("device", "")), device))
        ):
            return False  # the topic prefix also matches longer device names
        if channel and not fnmatch.fnmatchcase(str(doc.get("channel", "")), channel):
            return False
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
        return True

    return await follow_bus(endpoint, [topic], show, count=count, idle=idle, silence="no sample")
