"""Output of ``plant``: data on stdout (table, json or raw), diagnostics on stderr.

Default format is a table on a terminal and JSON otherwise, so ``plant services | jq`` works
without flags. Diagnostics are one plain line on stderr: scripts can parse stdout safely.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    raw = "raw"


def resolve_format(fmt: OutputFormat | str | None) -> OutputFormat:
    """Explicit flag, else ``PLANTD_CLIENT_OUTPUT``, else table on a TTY and json otherwise."""
    if fmt is None:
        fmt = os.environ.get("PLANTD_CLIENT_OUTPUT") or None
    if fmt is None:
        return OutputFormat.table if sys.stdout.isatty() else OutputFormat.json
    try:
        return OutputFormat(fmt)
    except ValueError:
        from plantd.cli.exitcodes import CliError, ExitCode

        raise CliError(
            f"invalid output format {fmt!r} (expected table, json or raw)", ExitCode.USAGE
        ) from None


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def error(message: object) -> None:
    """The single diagnostic line of a failed command."""
    print(f"plant: error: {one_line(message)}", file=sys.stderr, flush=True)


def info(message: object) -> None:
    """A progress/diagnostic line; never on stdout, which carries data only."""
    print(f"plant: {one_line(message)}", file=sys.stderr, flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain aligned columns (no Rich: it costs ~100 ms of import on every invocation)."""
    if not rows:
        return ""
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _tabulate(data: Any, columns: Sequence[str] | None) -> str:
    if isinstance(data, dict) and len(data) == 1:
        (only,) = data.values()
        if isinstance(only, list):  # {"services": [...]}: the list is the table
            data = only
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return render_table(data, columns)
    if isinstance(data, list):
        return "\n".join(_cell(v) for v in data)
    if isinstance(data, dict):
        if data and all(isinstance(v, dict) for v in data.values()):
            return render_table([{"name": k, **v} for k, v in data.items()], columns)
        return render_table([{"key": k, "value": v} for k, v in data.items()])
    return _cell(data)


def emit(
    data: Any, fmt: OutputFormat | str | None = None, columns: Sequence[str] | None = None
) -> None:
    """Write ``data`` to stdout in the chosen format."""
    fmt = resolve_format(fmt)
    out = sys.stdout
    if fmt is OutputFormat.json:
        out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    elif fmt is OutputFormat.raw:
        if isinstance(data, (bytes, bytearray)):
            out.flush()
            sys.stdout.buffer.write(bytes(data))
        elif isinstance(data, str):
            out.write(data + "\n")
        else:
            out.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    else:
        text = _tabulate(data, columns)
        if text:
            out.write(text + "\n")
    out.flush()


def emit_frames(frames: list[bytes], fmt: OutputFormat | str | None = None) -> None:
    """Reply of ``plant call``: raw writes every frame verbatim (newline-separated); json and
    table show the reply document, i.e. the last frame, JSON-decoded (text if not JSON)."""
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(b"\n".join(frames) + b"\n")
        sys.stdout.flush()
        return
    emit(decode_frame(frames[-1]) if frames else None, fmt)


def decode_frame(frame: bytes) -> Any:
    try:
        return json.loads(frame)
    except ValueError:
        return frame.decode("utf-8", "replace")


def emit_rows(
    rows: Iterable[Any], fmt: OutputFormat | str | None = None, columns: Sequence[str] = ()
) -> int:
    """Write rows as they come (memory flat in their number); return how many.

    json: ONE JSON array, one compact row per line (what ``emit`` of the list parses as);
    raw: one row per line (a string bare); table: aligned page by page, one header.
    Nothing is written before the first row arrives, so an error on the first page leaves
    stdout empty.
    """
    fmt = resolve_format(fmt)
    out = sys.stdout
    n = 0
    page: list[Any] = []

    def table(final: bool) -> None:
        if page:
            lines = render_table(
                [r if isinstance(r, dict) else {"key": r} for r in page], columns or None
            ).split("\n")
            out.write("\n".join(lines if n == len(page) else lines[1:]) + "\n")
            page.clear()
        if final:
            out.flush()

    for row in rows:
        n += 1
        if fmt is OutputFormat.json:
            text = json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str)
            out.write(("[\n" if n == 1 else ",\n") + text)
        elif fmt is OutputFormat.raw:
            out.write((row if isinstance(row, str) else _cell(row)) + "\n")
        else:
            page.append(row)
            if len(page) >= TABLE_PAGE:
                table(False)
    if fmt is OutputFormat.json:
        out.write("\n]\n" if n else "[]\n")
    elif fmt is OutputFormat.table:
        table(True)
    out.flush()
    return n


#: rows aligned together in a streamed table
TABLE_PAGE = 1000
