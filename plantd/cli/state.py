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
from collections.abc import Iterator
from typing import Any

import typer

from plantd.cli import client_settings, output_format
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, emit_rows, info, one_line, resolve_format
from plantd.vocabulary import STATE_SERVICE

SERVICE = STATE_SERVICE

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


def _client(ctx: typer.Context) -> Any:
    from plantd.client.sync import SyncClient

    s = client_settings(ctx)
    return SyncClient(s.endpoint, timeout=s.timeout, retries=s.retries)


def _data(reply: Any) -> Any:
    return reply.get("data", reply) if isinstance(reply, dict) else reply


def _call(ctx: typer.Context, operation: str, doc: dict[str, Any]) -> Any:
    """One request through the blocking client; ``success: false`` raises RequestRejected."""
    with _client(ctx) as c:
        return _data(c.call(SERVICE, operation, doc))


def _pages(
    ctx: typer.Context,
    operation: str,
    doc: dict[str, Any],
    item_field: str | None = None,
    *,
    stream: bool = False,
) -> Iterator[Any]:
    """Every page (or item) of a paged operation, one page in memory at a time."""
    from plantd.client.paging import pages_sync

    with _client(ctx) as c:
        yield from pages_sync(c, SERVICE, operation, doc, item_field, stream=stream)


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
    key: str = typer.Argument(..., help="Key to read."),
    scope: str | None = SCOPE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Print a key (-o raw: only the value, for $(plant state get KEY -o raw))."""
    _, scope = _settings(ctx, scope)
    data = _call(ctx, "state-get", {"service": scope, "key": key})
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
    key: str = typer.Argument(..., help="Key to write."),
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
    doc: dict[str, Any] = {
        "service": scope,
        "key": key,
        "value": _parse_value(value, as_json),
        "return_prev": True,
        "request_id": _request_id(),
    }
    if prev_revision is not None:
        doc["prev_revision"] = prev_revision
    if if_absent:
        doc["if_absent"] = True
    if ttl is not None:
        doc["ttl"] = ttl
    data = _call(ctx, "state-set", doc)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(data, fmt)
        return
    prev = data.get("prev")
    old = "(absent)" if prev is None else _show(prev.get("value"))
    sys.stdout.write(
        f"{scope}/{key}: {old} -> {_show(data.get('value'))}"
        f" (revision {data.get('mod_revision')}, version {data.get('version')})\n"
    )
    sys.stdout.flush()


@app.command("delete")
def delete(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key to delete."),
    scope: str | None = SCOPE_OPT,
    prev_revision: int | None = typer.Option(
        None, "--prev-revision", min=1, help="Only if the key's mod_revision is N."
    ),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Delete a key (exit 4 if it does not exist)."""
    _, scope = _settings(ctx, scope)
    doc: dict[str, Any] = {"service": scope, "key": key, "request_id": _request_id()}
    if prev_revision is not None:
        doc["prev_revision"] = prev_revision
    data = _call(ctx, "delete", doc)
    _report(ctx, output, data, f"deleted {scope}/{key} (revision {data.get('revision')})")


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
    doc: dict[str, Any] = {"service": scope, "values": values and not keys_only}
    if prefix:
        doc["prefix"] = prefix
    if limit is not None:
        doc["limit"] = min(limit, PAGE)
    rows: Iterator[Any] = _pages(ctx, "list-keys", doc, "keys")
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
    doc = {"prefix": prefix} if prefix else {}
    rows: Iterator[Any] = _pages(ctx, "list-scopes", doc, "details")
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
    data = _call(ctx, "create-scope", {"service": scope, "request_id": _request_id()})
    if data.get("created"):
        line = f"created scope {scope} (revision {data.get('revision')})"
    else:
        line = f"scope {scope} already exists"
    _report(ctx, output, data, line)


@app.command("delete-scope")
def delete_scope(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Scope to delete with all its keys."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Delete a scope and every key in it (exit 4 if it does not exist)."""
    data = _call(ctx, "delete-scope", {"service": name, "request_id": _request_id()})
    line = (
        f"deleted scope {name} ({data.get('deleted_keys')} keys, revision {data.get('revision')})"
    )
    _report(ctx, output, data, line)


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
    with _progress(f"backup to {dest}"):
        data = _call(ctx, "backup", {"path": dest, "overwrite": overwrite})
    line = f"backup {data.get('path')}: revision {data.get('revision')}, {data.get('bytes')} bytes"
    _report(ctx, output, data, line)


def _db_path(db: str | None) -> tuple[Any, Any]:
    """(home, database path) as the state daemon would resolve them."""
    from pathlib import Path

    from plantd.config import load_settings, plantd_home
    from plantd.state.daemon import StateSettings

    home = plantd_home()
    if db:
        return home, Path(db).expanduser().absolute()
    settings = load_settings(StateSettings, "state")
    return home, Path(settings.db) if settings.db else home.data / "state.db"


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


def write_export(pages: Iterator[dict[str, Any]], out: Any, advance: Any) -> tuple[int, int]:
    """Write export pages as ONE export document, page by page: (revision, keys).

    Pages come in (scope, key) order and a scope may continue on the next page, so a scope's
    object is closed when the next scope starts.
    """
    revision, keys, current = 0, 0, None
    first_key = True
    out.write('{\n  "format": "plantd-state",\n  "version": 1,\n')
    for n, page in enumerate(pages):
        if n == 0:
            revision = page.get("revision", 0)
            out.write(f'  "revision": {revision},\n  "scopes": {{')
        for scope, kv in page.get("scopes", {}).items():
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
        pages = _pages(ctx, "export", {}, stream=True)
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
    scopes: dict[str, Any], budget: int = IMPORT_CHUNK_BYTES
) -> Iterator[dict[str, dict[str, Any]]]:
    """Split an export's scopes into import documents of about ``budget`` bytes each."""
    chunk: dict[str, dict[str, Any]] = {}
    size = 0
    for scope, kv in scopes.items():
        if not isinstance(kv, dict):
            raise CliError(f"import: scope {scope!r} must map keys to values", ExitCode.USAGE)
        chunk.setdefault(scope, {})
        for key, value in kv.items():
            # as the request is encoded (json.dumps escapes non-ASCII: up to 6 bytes a char)
            item = len(json.dumps(key)) + len(json.dumps(value)) + 4
            if size and size + item > budget:
                yield chunk
                chunk, size = {scope: {}}, 0
            chunk[scope][key] = value
            size += item
    if chunk or not scopes:
        yield chunk


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
        # the service words the refusal
        data = _call(ctx, "import", {"doc": doc, "replace": replace, "request_id": _request_id()})
    total = sum(len(kv) for kv in doc["scopes"].values() if isinstance(kv, dict))
    data = {"revision": None, "scopes": len(doc["scopes"]), "keys": 0, "chunks": 0}
    header = {k: v for k, v in doc.items() if k != "scopes"}
    with _progress("import", total) as advance, _client(ctx) as c:
        for i, chunk in enumerate(import_chunks(doc["scopes"])):
            body = {
                "doc": {**header, "scopes": chunk},
                "replace": replace and i == 0,
                "request_id": _request_id(),
            }
            got = _data(c.call(SERVICE, "import", body))
            data["revision"] = got.get("revision")
            data["keys"] += got.get("keys", 0)
            data["chunks"] += 1
            advance(got.get("keys", 0))
    line = (
        f"imported {data['keys']} keys in {data['scopes']} scopes"
        f" (revision {data['revision']}"
        + (f", {data['chunks']} chunks)" if data["chunks"] > 1 else ")")
    )
    _report(ctx, output, data, line)


# --------------------------------------------------------------------------- watch


class Watcher:
    """The gap-free change stream behind ``plant state watch``.

    Subscribes to the state bus FIRST (every topic, so every revision is seen and a gap
    shows as a jump), then replays the history after the start revision through the
    ``watch`` operation and from then on prints bus events: those at or below the replayed
    revision are duplicates and dropped, a jump in revisions is filled from the history.
    A broker restart is noticed by probing its endpoint while idle; once it is back the
    history since the last printed revision is replayed (resync), so nothing is lost.
    """

    #: a bus subscription needs a moment to reach the proxy: replay once more after it
    SETTLE = 0.3
    IDLE = 0.25
    PROBE_EVERY = 1.0

    def __init__(
        self,
        *,
        endpoint: str,
        bus: str,
        timeout: float,
        scope: str | None,
        key: str | None,
        revision: int | None,
        count: int | None,
        fmt: OutputFormat,
        out: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.bus = bus
        self.timeout = timeout
        self.scope = scope
        self.key = key
        self.start = revision
        self.count = count
        self.fmt = fmt
        self.out = out or sys.stdout
        self.last = 0  # every revision <= last has been handled
        self.current: int | None = None  # revision being printed from the bus
        self.printed = 0
        self.client: Any = None

    # ---- output

    def _matches(self, ev: dict[str, Any]) -> bool:
        if self.scope is not None and ev.get("scope") != self.scope:
            return False
        if self.key is not None and ev.get("key") != self.key:
            return ev.get("op") == "delete-scope"  # deletes every key of the scope
        return True

    def _emit(self, ev: dict[str, Any]) -> bool:
        """Print one event if it matches; True once --count events were printed."""
        if not self._matches(ev):
            return False
        if self.fmt is OutputFormat.table:
            where = ev.get("scope", "")
            if ev.get("key") is not None:
                where = f"{where}/{ev['key']}"
            value = "" if ev.get("op") != "set" else " " + _show(ev.get("value"))
            line = f"{ev.get('revision'):>7} {ev.get('op', ''):<12} {where}{value}"
        else:
            line = json.dumps(ev, separators=(",", ":"), ensure_ascii=False, default=str)
        self.out.write(line + "\n")
        self.out.flush()
        self.printed += 1
        return self.count is not None and self.printed >= self.count

    # ---- history

    async def _replay(self, since: int | None) -> bool:
        """Print the history after ``since`` (None: start at the head); True when done."""
        from plantd.client.errors import RequestRejected

        if self.current is not None:  # a revision from the bus is complete by now
            self.last, self.current = self.current, None
        if since is not None:
            since = max(since, self.last)
        while True:
            doc: dict[str, Any] = {} if since is None else {"revision": since}
            if self.scope is not None:
                doc["service"] = self.scope
            try:
                reply = await self.client.call(SERVICE, "watch", doc)
            except RequestRejected as exc:
                if exc.doc.get("reason") == "compacted":  # a stale start: not a usage error
                    raise CliError(str(exc), ExitCode.REJECTED) from None
                raise
            data = reply.get("data", reply)
            for ev in data.get("events", []):
                if self._emit(ev):
                    return True
            since = int(data.get("revision", since or 0))
            self.last = max(self.last, since)
            if not data.get("more"):
                return False

    # ---- live

    async def _on_bus(self, ev: Any) -> bool:
        if not isinstance(ev, dict) or not isinstance(ev.get("revision"), int):
            return False
        rev = ev["revision"]
        if rev <= self.last:
            return False  # already replayed from the history
        if rev == self.current:
            return self._emit(ev)  # the next event of the same revision (a txn)
        if self.current is not None:
            self.last, self.current = self.current, None
        if rev > self.last + 1:
            # the bus lost something (reconnect, slow consumer): fill from the history
            if await self._replay(self.last):
                return True
            if rev <= self.last:
                return False
        self.current = rev
        return self._emit(ev)

    async def run(self) -> int:
        import asyncio
        import time

        from plantd.client import Client, Subscriber, errors
        from plantd.client.reply import probe_async

        transient = (
            errors.BrokerUnreachable,
            errors.RequestTimeout,
            errors.ServiceUnavailable,
            errors.UnknownService,
        )
        sub = Subscriber(self.bus, topics=[""])
        self.client = Client(self.endpoint, timeout=self.timeout)
        try:
            if self.start is not None:
                self.last = self.start
            if await self._replay(self.start):
                return ExitCode.OK
            resync_at: float | None = time.monotonic() + self.SETTLE
            next_probe = time.monotonic() + self.PROBE_EVERY
            lost = False
            while True:
                try:
                    _topic, ev = await sub.recv(timeout=self.IDLE)
                except TimeoutError:
                    pass
                else:
                    if lost:  # the bus delivers again: the broker is back
                        lost = False
                        info(
                            f"broker back at {self.endpoint}; resyncing after revision"
                            f" {self.current or self.last}"
                        )
                        resync_at = time.monotonic() + self.SETTLE
                    if await self._on_bus(ev):
                        return ExitCode.OK
                    continue
                now = time.monotonic()
                if now >= next_probe:
                    next_probe = now + self.PROBE_EVERY
                    reason = await probe_async(self.endpoint)
                    if reason is not None and not lost:
                        lost = True
                        info(f"{reason}; reconnecting (last revision {self.last})")
                    elif reason is None and lost:
                        lost = False
                        info(
                            f"broker back at {self.endpoint}; resyncing after revision"
                            f" {self.current or self.last}"
                        )
                        resync_at = now + self.SETTLE
                if resync_at is not None and not lost and now >= resync_at:
                    try:
                        if await self._replay(self.last):
                            return ExitCode.OK
                        resync_at = None
                    except transient as exc:
                        info(f"state service not answering ({one_line(exc)}); retrying")
                        resync_at = now + 1.0
                await asyncio.sleep(0)
        finally:
            sub.close()
            await self.client.close()


def state_bus_backend(explicit: str | None) -> str:
    """The state bus subscribe side (:func:`plantd.broker.settings.bus_endpoint`)."""
    from plantd.broker.settings import bus_endpoint

    return bus_endpoint("state", explicit)


@app.command("watch")
def watch(
    ctx: typer.Context,
    key: str | None = typer.Argument(None, help="Only this key (default: the whole scope)."),
    scope: str | None = SCOPE_OPT,
    all_scopes: bool = typer.Option(False, "--all", "-A", help="Watch every scope."),
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

    Runs until Ctrl-C or --count; follows the broker through restarts on its own.
    """
    import asyncio

    s, scope = _settings(ctx, scope)
    watcher = Watcher(
        endpoint=s.endpoint,
        bus=state_bus_backend(bus),
        timeout=s.timeout,
        scope=None if all_scopes else scope,
        key=key,
        revision=revision,
        count=count,
        fmt=_fmt(ctx, output),
    )
    raise typer.Exit(asyncio.run(watcher.run()))
