"""``plant state``: read, write and watch the scoped state store (``org.plantd.State``).

``get``/``set`` are what shell loops call, so this module imports only Typer and small plantd
modules; the blocking ``SyncClient`` (zmq, no asyncio) is imported inside the commands and
asyncio only by ``watch``. Exit codes: 4 missing key/scope, 6 compare-and-set conflict, plus
the common ones (3 broker unreachable, 7 timeout, 8 no state service).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from plantd.cli import client_settings, output_format
from plantd.cli.completion import key_names, scope_names
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, emit_rows, info, one_line, resolve_format

if TYPE_CHECKING:
    from plantd.client.errors import RequestRejected

app = typer.Typer(
    help="Read, write and watch the scoped state store.",
    no_args_is_help=True,
)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format (table, json, raw).")
SCOPE_OPT = typer.Option(
    None,
    "--scope",
    "-s",
    "--service",
    help="Scope (env PLANTD_CLIENT_SCOPE, default org.plantd.Client).",
    autocompletion=scope_names,
)
#: page size of list-keys requests (the service default; its maximum is 10000)
PAGE = 1000
#: an import is sent in chunks of about this many bytes of values (each chunk atomic)
IMPORT_CHUNK_BYTES = 512 * 1024

PREV_OPT = typer.Option(
    None, "--prev-revision", min=0, help="Only if the key's mod_revision is N (0: absent)."
)


# --------------------------------------------------------------------------- helpers


def _settings(ctx: typer.Context, scope: str | None) -> tuple[Any, str]:
    s = client_settings(ctx)
    scope = scope if scope is not None else s.scope
    if not scope:
        raise CliError("the scope must not be empty", ExitCode.USAGE)
    return s, scope


def _state(ctx: typer.Context) -> Any:
    """The blocking typed state client (``SyncStateClient``) with the CLI's settings."""
    from plantd.client.state import SyncStateClient

    s = client_settings(ctx)
    return SyncStateClient.connect(s.endpoint, timeout=s.timeout, retries=s.retries)


def _each(ctx: typer.Context, items: Callable[[Any], Iterator[Any]]) -> Iterator[Any]:
    """``items(state_client)`` with the client open for as long as they are read."""
    with _state(ctx) as st:
        yield from items(st)


@contextlib.contextmanager
def _progress(label: str, total: int | None = None) -> Iterator[Any]:
    """A Rich progress bar on stderr when it is a terminal; ``advance(n)`` otherwise no-op."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


def _request_id() -> str:
    """Makes client retries (PLANTD_CLIENT_RETRIES) idempotent: applied at most once."""
    return "plant-" + os.urandom(12).hex()


def _show(value: Any) -> str:
    """A value for humans and ``-o raw``: strings bare, everything else compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parse_value(text: str, as_json: bool) -> Any:
    if text == "-":
        text = sys.stdin.read()
        text = text[:-1] if text.endswith("\n") else text
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(
            f"--json: value is not valid JSON: {one_line(exc)}", ExitCode.USAGE
        ) from None


def _fmt(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    return resolve_format(output_format(ctx, output))


def _report(ctx: typer.Context, output: OutputFormat | None, data: Any, line: str) -> None:
    """The reply as JSON for scripts (``-o json``), one line for a person otherwise."""
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(data, fmt)
    else:
        sys.stdout.write(line + "\n")


# --------------------------------------------------------------------------- key commands


@app.command("get")
def get(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key to read.", autocompletion=key_names),
    scope: str | None = SCOPE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print a key (-o raw: only the value, for $(plant state get KEY -o raw))."""
    _, scope = _settings(ctx, scope)
    with _state(ctx) as st:
        data = st.get(scope, key).data
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.raw:
        sys.stdout.write(_show(data.get("value")) + "\n")
        sys.stdout.flush()
    elif fmt is OutputFormat.json:
        emit(data, fmt)
    else:
        emit(
            [data],
            fmt,
            columns=("scope", "key", "value", "mod_revision", "version", "expires"),
        )


@app.command("set")
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key to write.", autocompletion=key_names),
    value: str = typer.Argument(..., help="Value ('-' reads stdin); a string unless --json."),
    scope: str | None = SCOPE_OPT,
    as_json: bool = typer.Option(False, "--json", "-j", help="Parse VALUE as JSON."),
    prev_revision: int | None = PREV_OPT,
    if_absent: bool = typer.Option(False, "--if-absent", help="Only if the key does not exist."),
    ttl: float | None = typer.Option(None, "--ttl", help="Expire after this many seconds."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Write a key and print what changed (old -> new)."""
    _, scope = _settings(ctx, scope)
    if ttl is not None and ttl <= 0:
        raise CliError(f"--ttl must be > 0 seconds, got {ttl:g}", ExitCode.USAGE)
    with _state(ctx) as st:
        written = st.set(
            scope,
            key,
            _parse_value(value, as_json),
            prev_revision=prev_revision,
            if_absent=if_absent,
            ttl=ttl,
            return_prev=True,
            request_id=_request_id(),
        )
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(written.data, fmt)
        return
    old = "(absent)" if written.prev is None else _show(written.prev.value)
    sys.stdout.write(
        f"{scope}/{key}: {old} -> {_show(written.value)}"
        f" (revision {written.mod_revision}, version {written.version})\n"
    )
    sys.stdout.flush()


@app.command("delete")
def delete(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key to delete.", autocompletion=key_names),
    scope: str | None = SCOPE_OPT,
    prev_revision: int | None = typer.Option(
        None, "--prev-revision", min=1, help="Only if the key's mod_revision is N."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Delete a key (exit 4 if it does not exist)."""
    _, scope = _settings(ctx, scope)
    with _state(ctx) as st:
        deleted = st.delete(scope, key, prev_revision=prev_revision, request_id=_request_id())
    _report(ctx, output, deleted.data, f"deleted {scope}/{key} (revision {deleted.revision})")


@app.command("list")
def list_keys(
    ctx: typer.Context,
    scope: str | None = SCOPE_OPT,
    prefix: str = typer.Option("", "--prefix", "-p", help="Only keys starting with this."),
    values: bool = typer.Option(True, "--values/--no-values", help="Include values."),
    keys_only: bool = typer.Option(False, "--keys-only", "-k", help="Print key names only."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="At most N keys."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """List the keys of a scope page by page (exit 4 if the scope does not exist).

    Prints as pages arrive (memory flat in the number of keys); -o json writes one JSON
    array with one key object per line (key names with --keys-only).
    """
    _, scope = _settings(ctx, scope)
    page = None if limit is None else min(limit, PAGE)
    listed = _each(
        ctx,
        lambda st: st.list_keys(scope, prefix=prefix, values=values and not keys_only, limit=page),
    )
    rows: Iterator[Any] = (kv.data for kv in listed)
    if limit is not None:
        rows = itertools.islice(rows, limit)
    fmt = _fmt(ctx, output)
    if keys_only or fmt is OutputFormat.raw:
        rows = (k["key"] for k in rows)
    cols = ["key"] if keys_only else ["key", "value"] if values else ["key"]
    extra = () if keys_only else ("mod_revision", "version", "expires")
    emit_rows(rows, fmt, columns=(*cols, *extra))


@app.command("scopes")
def scopes(
    ctx: typer.Context,
    prefix: str = typer.Option("", "--prefix", "-p", help="Only scopes starting with this."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """List scopes with their key counts, page by page (-o json: one JSON array)."""
    listed = _each(ctx, lambda st: st.list_scopes(prefix=prefix))
    rows: Iterator[Any] = (info.data for info in listed)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.raw:
        rows = (d["scope"] for d in rows)
    emit_rows(rows, fmt, columns=("scope", "keys", "create_revision"))


@app.command("create-scope")
def create_scope(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Scope (default: --scope / the client's)."),
    scope: str | None = SCOPE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Create a scope (an existing one is not an error)."""
    _, scope = _settings(ctx, name if name is not None else scope)
    with _state(ctx) as st:
        created = st.create_scope(scope, request_id=_request_id())
    if created.created:
        line = f"created scope {scope} (revision {created.revision})"
    else:
        line = f"scope {scope} already exists"
    _report(ctx, output, created.data, line)


@app.command("delete-scope")
def delete_scope(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Scope to delete with all its keys."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Delete a scope and every key in it (exit 4 if it does not exist)."""
    with _state(ctx) as st:
        deleted = st.delete_scope(name, request_id=_request_id())
    line = f"deleted scope {name} ({deleted.deleted_keys} keys, revision {deleted.revision})"
    _report(ctx, output, deleted.data, line)


# --------------------------------------------------------------------------- backup & co


@app.command("backup")
def backup(
    ctx: typer.Context,
    path: str = typer.Argument(..., help="Backup file to write (one self-contained SQLite file)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Online backup by the running state daemon (a consistent snapshot)."""
    dest = os.path.abspath(os.path.expanduser(path))
    with _progress(f"backup to {dest}"), _state(ctx) as st:
        data = st.call("backup", {"path": dest, "overwrite": overwrite})
    line = f"backup {data.get('path')}: revision {data.get('revision')}, {data.get('bytes')} bytes"
    _report(ctx, output, data, line)


def _db_path(db: str | None) -> tuple[Any, Any]:
    """(home, database path) as the state daemon would resolve them."""
    from pathlib import Path

    from plantd.config import load_settings, plantd_home
    from plantd.state.settings import StateSettings, db_path

    home = plantd_home()
    if db:
        return home, Path(db).expanduser().absolute()
    return home, db_path(load_settings(StateSettings, "state"), home)


@app.command("restore")
def restore(
    ctx: typer.Context,
    backup_file: str = typer.Argument(..., help="Backup file written by 'plant state backup'."),
    db: str | None = typer.Option(
        None, "--db", help="Database to replace (default: the state daemon's)."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Replace the database with a backup. OFFLINE: stop the state daemon first."""
    from pathlib import Path

    from plantd.daemons import process

    home, path = _db_path(db)
    running = process.check_running(home, "state")
    if running is not None:
        raise CliError(
            f"the state daemon is running (pid {running.pid}); restore is offline:"
            " run 'plant daemon stop state' first",
            ExitCode.CONFLICT,
        )
    src = Path(backup_file).expanduser()
    if not src.is_file():
        raise CliError(f"backup {src} does not exist", ExitCode.NOT_FOUND)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    from plantd.state import StateStore

    data = StateStore.restore(src, path)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(data, fmt)
    else:
        sys.stdout.write(f"restored {path} to revision {data.get('revision')} from {src}\n")
        if data.get("previous"):
            info(f"previous database kept as {data['previous']}")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ": "))


def write_export(pages: Iterator[Any], out: Any, advance: Any) -> tuple[int, int]:
    """Write export pages as ONE export document, page by page: (revision, keys).

    Pages come in (scope, key) order and a scope may continue on the next page, so a scope's
    object is closed when the next scope starts.
    """
    revision, keys, current = 0, 0, None
    first_key = True
    out.write('{\n  "format": "plantd-state",\n  "version": 1,\n')
    for n, page in enumerate(pages):
        if n == 0:
            revision = page.revision
            out.write(f'  "revision": {revision},\n  "scopes": {{')
        for scope, kv in page.scopes.items():
            if scope != current:
                if current is not None:
                    out.write("\n    },")
                out.write(f"\n    {_dump(scope)}: {{")
                current, first_key = scope, True
            for key, value in kv.items():
                out.write(("\n" if first_key else ",\n") + f"      {_dump(key)}: {_dump(value)}")
                first_key = False
            keys += len(kv)
            advance(len(kv))
    if current is not None:
        out.write("\n    }\n  ")
    out.write("}\n}\n")
    return revision, keys


@app.command("export")
def export(
    ctx: typer.Context,
    file: str | None = typer.Option(None, "--file", "-f", help="Write here instead of stdout."),
) -> None:
    """Export every scope, key and value as one JSON document (format plantd-state).

    Streamed from one snapshot of the store (one revision) and written as it arrives.
    """
    with _progress("export") as advance:
        pages = _each(ctx, lambda st: st.export())
        if file is None or file == "-":
            write_export(pages, sys.stdout, advance)
            sys.stdout.flush()
            return
        tmp = f"{file}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                revision, keys = write_export(pages, fh, advance)
            os.replace(tmp, file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    info(f"exported revision {revision} ({keys} keys) to {file}")


def import_chunks(
    scopes: dict[str, Any], budget: int = IMPORT_CHUNK_BYTES, max_keys: int | None = None
) -> Iterator[dict[str, dict[str, Any]]]:
    """Split an export's scopes into import documents of about ``budget`` bytes (and at
    most ``max_keys`` keys) each."""
    chunk: dict[str, dict[str, Any]] = {}
    size = count = 0
    for scope, kv in scopes.items():
        if not isinstance(kv, dict):
            raise CliError(f"import: scope {scope!r} must map keys to values", ExitCode.USAGE)
        chunk.setdefault(scope, {})
        for key, value in kv.items():
            # as the request is encoded (json.dumps escapes non-ASCII: up to 6 bytes a char)
            item = len(json.dumps(key)) + len(json.dumps(value)) + 4
            if (size and size + item > budget) or (max_keys and count >= max_keys):
                yield chunk
                chunk, size, count = {scope: {}}, 0, 0
            chunk[scope][key] = value
            size += item
            count += 1
    if chunk or not scopes:
        yield chunk


class ChunkFit:
    """Import chunks within the store's ops-per-write limit: on etcd a chunk is one etcd
    txn of at most ``--max-txn-ops`` ops; the refusal names the limit and the chunk is
    sent again in parts that fit (each still atomic; nothing of a refused chunk was
    applied), and later chunks are cut to that size from the start."""

    def __init__(self) -> None:
        self.max_keys: int | None = None
        self._retry: list[dict[str, dict[str, Any]]] = []

    def parts(self, chunk: dict[str, dict[str, Any]]) -> Iterator[dict[str, dict[str, Any]]]:
        self._retry = list(import_chunks(chunk, max_keys=self.max_keys))
        while self._retry:
            yield self._retry.pop(0)

    def learn(self, exc: RequestRejected, part: dict[str, dict[str, Any]]) -> None:
        doc = exc.doc
        keys = sum(len(kv) for kv in part.values())
        if exc.code != "limit_exceeded" or doc.get("limit") != "etcd_max_txn_ops" or keys <= 1:
            raise exc
        # ops grow with keys (a put each, and a delete range each with --replace)
        fit = keys * int(doc["maximum"]) // max(int(doc["actual"]), 1) - 4
        self.max_keys = max(1, min(fit, keys // 2))
        self._retry[:0] = list(import_chunks(part, max_keys=self.max_keys))


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="Export document ('-' reads stdin)."),
    replace: bool = typer.Option(False, "--replace", help="Delete every other scope first."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Import an export document: one revision, or chunks of ~512 KiB (each one atomic)."""
    try:
        text = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}", ExitCode.NOT_FOUND) from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{file}: not valid JSON: {one_line(exc)}", ExitCode.USAGE) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scopes"), dict):
        with _state(ctx) as st:  # the service words the refusal
            st.import_(doc, replace=replace, request_id=_request_id())
    total = sum(len(kv) for kv in doc["scopes"].values() if isinstance(kv, dict))
    data: dict[str, Any] = {"revision": None, "scopes": len(doc["scopes"]), "keys": 0, "chunks": 0}
    header = {k: v for k, v in doc.items() if k != "scopes"}
    from plantd.client.errors import RequestRejected

    with _progress("import", total) as advance, _state(ctx) as st:
        fit = ChunkFit()
        for chunk in import_chunks(doc["scopes"]):
            for part in fit.parts(chunk):
                try:
                    got = st.import_(
                        {**header, "scopes": part},
                        replace=replace and data["chunks"] == 0,
                        request_id=_request_id(),
                    )
                except RequestRejected as exc:
                    fit.learn(exc, part)  # raises unless a smaller chunk will fit
                    continue
                data["revision"] = got.revision
                data["keys"] += got.keys
                data["chunks"] += 1
                advance(got.keys)
    line = (
        f"imported {data['keys']} keys in {data['scopes']} scopes"
        f" (revision {data['revision']}"
        + (f", {data['chunks']} chunks)" if data["chunks"] > 1 else ")")
    )
    _report(ctx, output, data, line)


# --------------------------------------------------------------------------- watch


def watch_line(ev: Any, fmt: OutputFormat) -> str:
    """One ``WatchEvent`` as ``plant state watch`` prints it (a JSON object with -o json)."""
    if fmt is OutputFormat.table:
        where = ev.scope
        if ev.key is not None:
            where = f"{where}/{ev.key}"
        value = "" if ev.op != "set" else " " + _show(ev.value)
        return f"{ev.revision:>7} {ev.op:<12} {where}{value}"
    return json.dumps(ev.data, separators=(",", ":"), ensure_ascii=False, default=str)


async def print_watch(watch: Any, fmt: OutputFormat, count: int | None, out: Any = None) -> int:
    """Print the events of a ``StateWatch`` until ``count`` (or forever)."""
    from plantd.client.errors import RequestRejected

    out = out or sys.stdout
    printed = 0
    try:
        async with contextlib.aclosing(watch.__aiter__()) as events:
            async for ev in events:
                out.write(watch_line(ev, fmt) + "\n")
                out.flush()
                printed += 1
                if count is not None and printed >= count:
                    break
    except RequestRejected as exc:
        if exc.doc.get("reason") == "compacted":  # a stale start: not a usage error
            raise CliError(str(exc), ExitCode.REJECTED) from None
        raise
    return ExitCode.OK


def state_bus_backend(explicit: str | None) -> str:
    """The state bus subscribe side (:func:`plantd.broker.settings.bus_endpoint`)."""
    from plantd.broker.settings import bus_endpoint

    return bus_endpoint("state", explicit)


WATCH_SCOPE_OPT = typer.Option(
    None,
    "--scope",
    "-s",
    help="Only this scope (default: every scope; a KEY alone is in the client's scope).",
)


def watch_target(scope: str | None, key: str | None) -> str:
    """What ``plant state watch`` follows, as it says on stderr."""
    if scope is None:
        return "every scope" if key is None else f"key {key} in every scope"
    return f"scope {scope}" if key is None else f"key {scope}/{key}"


@app.command("watch")
def watch(
    ctx: typer.Context,
    key: str | None = typer.Argument(None, help="Only this key (default: the whole scope)."),
    scope: str | None = WATCH_SCOPE_OPT,
    all_scopes: bool = typer.Option(
        False, "--all", "-A", help="Watch every scope (the default without -s and KEY)."
    ),
    revision: int | None = typer.Option(
        None,
        "--revision",
        "-r",
        min=0,
        help="First replay the changes after revision N (resume from the last one you saw).",
    ),
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N events."),
    bus: str | None = typer.Option(None, "--bus", help="State bus backend endpoint."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print changes as they commit, in revision order, with no gap and no duplicate.

    Follows every scope unless -s (or a KEY, in the client's scope) narrows it, and says on
    stderr what it follows. Runs until Ctrl-C or --count; follows the broker through
    restarts on its own.
    """
    import asyncio

    from plantd.client.state import StateClient

    narrowed = not all_scopes and (scope is not None or key is not None)
    s, scope = _settings(ctx, scope)
    followed = scope if narrowed else None
    backend = state_bus_backend(bus)
    fmt = _fmt(ctx, output)
    info(f"following {watch_target(followed, key)}")

    async def run() -> int:
        async with StateClient.connect(s.endpoint, timeout=s.timeout) as state:
            events = state.watch(revision, bus=backend, scope=followed, key=key, notify=info)
            return await print_watch(events, fmt, count)

    raise typer.Exit(asyncio.run(run()))
