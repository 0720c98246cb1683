"""``plant log``: read log records live from the log bus or stored by the logger service.

``tail`` prints the last records the logger stored and, with ``-f``, follows the bus live
(records already printed are not repeated). ``query`` searches the store page by page,
printing each page as it arrives (memory stays flat however many records are asked for),
``stats`` shows counts per level/service and records missed per producer. ``-o json`` prints
one JSON object per line. Heavy imports (zmq, asyncio) happen inside the commands.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import typer

from plantd.cli import client_settings, output_format
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, info

SERVICE = "org.plantd.Logger"  # plantd.logger.SERVICE, without importing the package

app = typer.Typer(
    help="Read the log: live from the log bus or stored by the logger.", no_args_is_help=True
)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format (json: one per line).")
SERVICE_OPT = typer.Option(None, "--service", "-s", help="Service name (globs: org.plantd.*).")
LEVEL_OPT = typer.Option(None, "--level", "-l", help="Minimum level: debug..critical.")
BUS_OPT = typer.Option(
    None, "--bus", help="Log bus backend (default: PLANTD_CLIENT_LOG_BUS or broker config)."
)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_LEVELS = ("debug", "info", "warning", "error", "critical")
#: records per request when following pages (the logger's and metric module's maximum)
PAGE_LIMIT = 10_000


def parse_when(value: str | None, now: float | None = None) -> float | str | None:
    """``10m``/``2h``/``1d`` ago -> epoch seconds; epoch numbers and ISO-8601 pass through."""
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    now = time.time() if now is None else now
    if text == "now":
        return now
    match = _RELATIVE.match(text.lstrip("-"))
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"invalid time {value!r} (use 10m, 2h, 1d, epoch seconds or ISO-8601)",
            ExitCode.USAGE,
        ) from None
    return value.strip()


def check_level(level: str | None) -> str | None:
    if level is None:
        return None
    name = level.strip().lower()
    name = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical"}.get(
        name, name
    )
    if name not in _LEVELS:
        raise CliError(f"invalid level {level!r} (use {', '.join(_LEVELS)})", ExitCode.USAGE)
    return name


def _fmt(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    fmt = output_format(ctx, output)
    if fmt is None:
        import os

        fmt = os.environ.get("PLANTD_CLIENT_OUTPUT") or None
    if fmt is None:
        return OutputFormat.table if sys.stdout.isatty() else OutputFormat.json
    try:
        return OutputFormat(fmt)
    except ValueError:
        raise CliError(f"invalid output format {fmt!r}", ExitCode.USAGE) from None


def format_record(rec: dict[str, Any]) -> str:
    """One human line: ``time LEVEL service msg key=value ...``."""
    ts = rec.get("ts")
    try:
        t = float(ts)  # type: ignore[arg-type]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
    except (TypeError, ValueError, OverflowError, OSError):  # not a time, or out of range
        stamp = str(ts or "-")
    level = str(rec.get("level", "")).upper()
    line = f"{stamp} {level:<8} {rec.get('service', '?')}: {rec.get('msg', '')}"
    fields = rec.get("fields")
    if isinstance(fields, dict):
        exc = fields.get("exc")
        extra = " ".join(
            f"{k}={v if isinstance(v, str) and ' ' not in v else json.dumps(v, default=str)}"
            for k, v in fields.items()
            if k != "exc"
        )
        if extra:
            line += f" {extra}"
        if isinstance(exc, str):
            line += "\n" + exc
    return line


def print_records(records: Iterable[dict[str, Any]], fmt: OutputFormat) -> None:
    out = sys.stdout
    for rec in records:
        if fmt is OutputFormat.table:
            out.write(format_record(rec) + "\n")
        else:
            out.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
    out.flush()


def _call(ctx: typer.Context, operation: str, doc: dict[str, Any]) -> Any:
    from plantd.client import SyncClient

    s = client_settings(ctx)
    with SyncClient(s.endpoint, timeout=s.timeout, retries=s.retries) as c:
        reply = c.call(SERVICE, operation, doc)  # raises RequestRejected on success: false
    return reply.get("data", reply) if isinstance(reply, dict) else reply


def follow_pages(
    ctx: typer.Context,
    service: str,
    operation: str,
    doc: dict[str, Any],
    items: str,
    total: int | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The ``items`` of each page of ``operation``, following ``next`` until ``total`` items
    (None: all) or the last page; a service that does not page answers one page."""
    from plantd.client import SyncClient

    s = client_settings(ctx)
    left = total
    after: Any = None
    with SyncClient(s.endpoint, timeout=s.timeout, retries=s.retries) as c:
        while left is None or left > 0:
            request = dict(doc, limit=PAGE_LIMIT if left is None else min(left, PAGE_LIMIT))
            if after is not None:
                request["after"] = after
            reply = c.call(service, operation, request)  # RequestRejected on success: false
            data = reply.get("data", reply) if isinstance(reply, dict) else {}
            page = data.get(items, []) if isinstance(data, dict) else []
            yield page
            if left is not None:
                left -= len(page)
            after = data.get("next") if isinstance(data, dict) else None
            if not data.get("more") or after is None:  # a short or empty page may say more
                return


def _query_doc(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def log_bus_backend(explicit: str | None) -> str:
    """The log bus backend: ``--bus``, ``PLANTD_CLIENT_LOG_BUS`` or the broker's settings."""
    import os

    if explicit:
        return explicit
    env = os.environ.get("PLANTD_CLIENT_LOG_BUS", "").strip()
    if env:
        return env
    from plantd.config import load_settings
    from plantd.daemons.broker import BrokerDaemonSettings

    return load_settings(BrokerDaemonSettings, "broker").bus_endpoints("log")[1]


@app.command("tail")
def tail(
    ctx: typer.Context,
    service: str | None = SERVICE_OPT,
    level: str | None = LEVEL_OPT,
    follow: bool = typer.Option(False, "--follow", "-f", help="Follow the log bus live."),
    lines: int = typer.Option(20, "--lines", "-n", min=0, help="Stored records to show first."),
    idle: float | None = typer.Option(
        None, "--idle", min=0.01, help="With -f: stop (exit 7) after this long without records."
    ),
    count: int | None = typer.Option(
        None, "--count", "-c", min=1, help="With -f: stop after this many live records."
    ),
    bus: str | None = BUS_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Show the last records; with -f keep following the log bus."""
    from plantd.client.errors import PlantdError, ServiceUnavailable, UnknownService

    fmt = _fmt(ctx, output)
    level = check_level(level)
    history: list[dict[str, Any]] = []
    if lines > 0:
        try:
            doc = _query_doc(service=service, level=level, order="desc")
            for page in follow_pages(ctx, SERVICE, "query", doc, "records", lines):
                history.extend(page)
            history.reverse()
        except (UnknownService, ServiceUnavailable) as exc:
            if not follow:
                raise
            info(f"logger unavailable ({exc}); following the bus only")
        except PlantdError as exc:
            if not follow or type(exc).__name__ == "BrokerUnreachable":
                raise
            info(f"logger query failed ({exc}); following the bus only")
    print_records(history, fmt)
    if not follow:
        return
    import asyncio

    endpoint = log_bus_backend(bus)
    seen: dict[tuple[Any, Any, Any], int] = {}
    for rec in history:
        if isinstance(rec.get("seq"), int):
            key = (rec.get("host"), rec.get("pid"), rec.get("service"))
            seen[key] = max(seen.get(key, 0), rec["seq"])
    raise typer.Exit(asyncio.run(_follow(endpoint, service, level, fmt, idle, count, seen)))


async def _follow(
    endpoint: str,
    service: str | None,
    level: str | None,
    fmt: OutputFormat,
    idle: float | None,
    count: int | None,
    seen: dict[tuple[Any, Any, Any], int],
) -> int:
    import fnmatch

    from plantd.client import Subscriber

    glob = service is not None and any(ch in service for ch in "*?[")
    topics = [f"{service}."] if service and not glob else [""]
    min_rank = _LEVELS.index(level) if level else 0
    sub = Subscriber(endpoint, topics=topics)
    printed = 0
    try:
        while count is None or printed < count:
            try:
                _topic, rec = await sub.recv(timeout=idle)
            except TimeoutError:
                raise CliError(f"no log record within {idle:g}s", ExitCode.TIMEOUT) from None
            if not isinstance(rec, dict):
                continue
            if glob and not fnmatch.fnmatchcase(str(rec.get("service", "")), service or ""):
                continue
            lvl = str(rec.get("level", "info"))
            if lvl in _LEVELS and _LEVELS.index(lvl) < min_rank:
                continue
            seq = rec.get("seq")
            if isinstance(seq, int) and seen:
                key = (rec.get("host"), rec.get("pid"), rec.get("service"))
                if seq <= seen.get(key, 0):
                    continue  # already printed from the store
            print_records([rec], fmt)
            printed += 1
    finally:
        sub.close()
    return ExitCode.OK


@app.command("query")
def query(
    ctx: typer.Context,
    since: str | None = typer.Option(None, "--since", help="From: 10m, 2h, 1d, epoch or ISO."),
    until: str | None = typer.Option(None, "--until", help="Until: 10m, epoch or ISO."),
    level: str | None = LEVEL_OPT,
    service: str | None = SERVICE_OPT,
    text: str | None = typer.Option(None, "--text", "-x", help="Substring of message/fields."),
    host: str | None = typer.Option(None, "--host", help="Producer host."),
    source: str | None = typer.Option(None, "--source", help="log or event."),
    limit: int = typer.Option(
        100, "--limit", "-n", min=0, help="At most N records (fetched page by page)."
    ),
    order: str = typer.Option("desc", "--order", help="desc (newest first) or asc."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Search the records the logger stored."""
    if order not in ("asc", "desc"):
        raise CliError(f"invalid order {order!r} (use asc or desc)", ExitCode.USAGE)
    doc = _query_doc(
        since=parse_when(since),
        until=parse_when(until),
        level=check_level(level),
        service=service,
        text=text,
        host=host,
        source=source,
        order=order,
    )
    fmt = _fmt(ctx, output)
    for page in follow_pages(ctx, SERVICE, "query", doc, "records", limit):
        print_records(page, fmt)


@app.command("stats")
def stats(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """Records per level and service, and records missed per producer."""
    data = _call(ctx, "stats", {})
    fmt = _fmt(ctx, output)
    if fmt is not OutputFormat.table:
        emit(data, fmt)
        return
    out = sys.stdout
    out.write(f"records: {data.get('total', 0)}  missed: {data.get('missed', 0)}\n\n")
    levels = data.get("levels", {})
    rows = [{"level": name, "records": levels[name]} for name in _LEVELS if name in levels]
    if rows:
        emit(rows, fmt)
        out.write("\n")
    services = data.get("services", {})
    if services:
        emit([{"service": k, "records": v} for k, v in sorted(services.items())], fmt)
        out.write("\n")
    producers = data.get("producers", [])
    if producers:
        emit(producers, fmt, columns=("service", "host", "pid", "received", "missed", "last_seq"))
