"""The audit trail: an append-only, hash-chained log of writes and denials on SQLite.

Each row's ``hash`` is sha256 over ``prev_hash`` and a canonical JSON encoding of the row
(every column but ``hash``), so editing a row breaks its own hash and deleting one breaks
the next row's ``prev_hash`` (and leaves a gap in ``seq``). The chain's head (last seq, its
hash, and the retention anchor) is also written to a sidecar file (``audit.db.head``, fsynced
and renamed atomically after each commit), so a truncated tail or a removed head is caught.

What :meth:`AuditLog.verify` cannot catch: someone able to write both the database and the
sidecar can rewrite the whole chain consistently. Publishing the head hash elsewhere (the
event bus, another host) is what closes that; the enforcement session does it. A crash
between the commit and the sidecar write leaves the sidecar one step behind: verify accepts
a sidecar head that is on the chain, below the last row.

Retention: :meth:`prune` deletes rows older than the cutoff and appends an ``audit.prune``
row recording the seq and hash of the last deleted row (the anchor); verify then starts the
chain at the anchor, which is kept in the ``meta`` table and in the sidecar.

Several chains make up a host's trail (:class:`AuditSource`): the keyring's ``audit.db``
(the Identity service, the broker's denials, ``plant identity``) and every chain a daemon
keeps inside its own database (the state store writes its rows in the same transaction as
the writes they record) and registers in ``audit.d/``. :func:`merged_query` lists them
merged by time, :func:`verify_sources` verifies each chain on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from plantd.security.errors import InvalidArgument
from plantd.security.keys import write_durably

GENESIS = "0" * 64
#: values whose JSON encoding is larger than this are stored as a digest
VALUE_LIMIT = 4096
DEFAULT_RETENTION = 365 * 86400.0
DEFAULT_PAGE = 100
MAX_PAGE = 1000
COLUMNS = (
    "seq", "ts", "principal", "peer", "service", "operation", "scope", "key", "old", "new",
    "revision", "request_id", "outcome", "prev_hash",
)  # fmt: skip

AUDIT_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    principal TEXT NOT NULL,
    peer TEXT,
    service TEXT NOT NULL,
    operation TEXT NOT NULL,
    scope TEXT,
    key TEXT,
    old TEXT,
    new TEXT,
    revision INTEGER,
    request_id TEXT,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""
#: the table holding the retention anchor: ``meta`` in audit.db; a chain kept inside another
#: daemon's database names its own (the state store: ``audit_meta``)
META = "meta"
#: the name of the keyring's own chain (audit.db) among a host's sources
KEYRING_SOURCE = "keyring"
INSERT_SQL = f"INSERT INTO audit VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"


def meta_table_sql(meta: str = META) -> str:
    return f"CREATE TABLE IF NOT EXISTS {meta} (name TEXT PRIMARY KEY, value TEXT NOT NULL);"


_SCHEMA = AUDIT_TABLE_SQL + meta_table_sql()


# The chain's canonical text is the standard library's (rows written before stay verifiable);
# orjson writes the same bytes ~10x faster except where the checks below say it may not:
# exponent floats (Python: 1e-05, 1e+16; orjson: 0.00001, 1e16), NaN/Infinity (orjson: null)
# and whatever it refuses (big integers, surrogates, subclasses): those take the json path.
_VALUE_TEXT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_ROW_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DIGEST_TEXT = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_ORJSON_SORTED = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
#: text where orjson's output may differ from json's: an exponent, a float below 1e-4, null
_MAY_DIFFER = re.compile(rb"[0-9][eE]|0\.0000|null")
#: floats json and orjson write alike (neither uses an exponent in this range)
_PLAIN_FLOATS = (1e-4, 1e15)


def stored_value(value: Any) -> str | None:
    """The JSON text kept for an old/new value: the value, or its digest when it is large."""
    if value is None:
        return None
    try:
        fast = orjson.dumps(value, option=_ORJSON_SORTED)
    except orjson.JSONEncodeError:
        fast = b"null"  # refused: the json path decides
    if _MAY_DIFFER.search(fast) is None:
        raw, text = fast, fast.decode("utf-8")
    else:
        text = _VALUE_TEXT.encode(value)
        raw = text.encode("utf-8")
    if len(raw) <= VALUE_LIMIT:
        return text
    return _DIGEST_TEXT.encode({"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)})


def _canonical_row(values: list[Any]) -> bytes:
    """The canonical JSON of a row's columns (``COLUMNS`` order): json's bytes."""
    ts = values[1]  # the only float column (a revision read back as REAL takes the json path)
    if (
        type(ts) is float
        and _PLAIN_FLOATS[0] <= ts < _PLAIN_FLOATS[1]
        and type(values[10]) is not float
    ):
        try:
            return orjson.dumps(values)
        except orjson.JSONEncodeError:
            pass  # refused (a big integer, a surrogate): json decides
    return _ROW_TEXT.encode(values).encode("utf-8")


def _hash(prev_hash: str, values: list[Any]) -> str:
    return hashlib.sha256(prev_hash.encode("utf-8") + _canonical_row(values)).hexdigest()


def row_hash(row: dict[str, Any]) -> str:
    """sha256(prev_hash + canonical JSON of the row's columns but ``hash``)."""
    return _hash(row["prev_hash"], [row[c] for c in COLUMNS])


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool
    #: the last seq returned; a merged listing: the last seq per source
    next: int | dict[str, int] | None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""
    rows: int = 0


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    anchor_seq: int
    anchor_hash: str

    @classmethod
    def empty(cls) -> Head:
        return cls(0, GENESIS, 0, GENESIS)


@dataclass(frozen=True)
class Entry:
    """One audit record before it is chained (``append_entries`` gives it seq and hashes)."""

    principal: str
    service: str
    operation: str
    outcome: str
    peer: str | None = None
    scope: str | None = None
    key: str | None = None
    old: Any = None
    new: Any = None
    revision: int | None = None
    request_id: str | None = None
    ts: float | None = None


def open_audit_db(db: sqlite3.Connection) -> None:
    """The pragmas and schema every writer of the audit database uses."""
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(_SCHEMA)


def _meta(db: sqlite3.Connection, name: str, default: str, meta: str = META) -> str:
    row = db.execute(f"SELECT value FROM {meta} WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else default


def _anchor(db: sqlite3.Connection, meta: str = META) -> tuple[int, str]:
    return int(_meta(db, "anchor_seq", "0", meta)), _meta(db, "anchor_hash", GENESIS, meta)


def _last(db: sqlite3.Connection, meta: str = META) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else _anchor(db, meta)


def append_entries(
    db: sqlite3.Connection, entries: list[Entry], now: float
) -> list[dict[str, Any]]:
    """Chain and insert ``entries`` in ONE transaction (one fsync for the whole batch).

    Several processes may append to one file: the chain's last row is read inside the
    write lock (``BEGIN IMMEDIATE``), so concurrent writers extend one chain in turn."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = _insert_entries(db, entries, now)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return rows


def _insert_entries(
    db: sqlite3.Connection, entries: list[Entry], now: float, meta: str = META
) -> list[dict[str, Any]]:
    """Chain ``entries`` after the last row and insert them (inside the caller's transaction)."""
    seq, prev = _last(db, meta)
    rows = chain(entries, now, seq, prev)
    insert_rows(db, rows)
    return rows


#: rows per INSERT statement: one statement per power of two up to this many rows, so a
#: batch of any size steps a few cached statements instead of one per row (every step
#: releases and re-takes the GIL; a busy event loop then holds the writer up each time)
_ROWS_PER_INSERT = 128
_ROW_PARAMS = "(" + ",".join("?" * (len(COLUMNS) + 1)) + ")"


def insert_rows(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert chained rows (inside the caller's transaction)."""
    params = [r[c] for r in rows for c in (*COLUMNS, "hash")]
    width = len(COLUMNS) + 1
    done, size = 0, _ROWS_PER_INSERT
    while done < len(rows):
        while size > len(rows) - done:
            size //= 2
        sql = "INSERT INTO audit VALUES " + ",".join([_ROW_PARAMS] * size)
        db.execute(sql, params[done * width : (done + size) * width])
        done += size


def chain(entries: Iterable[Entry], now: float, seq: int, prev: str) -> list[dict[str, Any]]:
    """The rows of ``entries`` chained after the row ``seq`` whose hash is ``prev`` (pure:
    a writer that keeps its chain's end in memory chains a batch before it commits)."""
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        values = [
            seq,
            float(now if e.ts is None else e.ts),
            e.principal,
            e.peer,
            e.service,
            e.operation,
            e.scope,
            e.key,
            stored_value(e.old),
            stored_value(e.new),
            e.revision,
            e.request_id,
            e.outcome,
            prev,
        ]
        prev = _hash(prev, values)
        row = dict(zip(COLUMNS, values, strict=True))
        row["hash"] = prev
        rows.append(row)
    return rows


def read_head_of(db: sqlite3.Connection, meta: str = META) -> Head:
    """The chain's head as the database says (what the sidecar and the bus carry)."""
    seq, digest = _last(db, meta)
    anchor_seq, anchor_hash = _anchor(db, meta)
    return Head(seq, digest, anchor_seq, anchor_hash)


def write_head(db: sqlite3.Connection, head_path: Path) -> Head:
    """Move the sidecar to the database's head (temporary file, fsync, rename)."""
    head = read_head_of(db)
    write_head_file(head, head_path)
    return head


def write_head_file(head: Head, head_path: Path) -> None:
    """Write ``head`` to the sidecar durably (temporary file, fsync, rename)."""
    doc = {
        "seq": head.seq,
        "hash": head.hash,
        "anchor_seq": head.anchor_seq,
        "anchor_hash": head.anchor_hash,
    }
    write_durably(head_path, json.dumps(doc, sort_keys=True) + "\n", 0o600)


def drop_rows_before(
    db: sqlite3.Connection, cutoff: float, last: int, meta: str = META
) -> tuple[int, Entry] | None:
    """Inside the caller's transaction: delete rows older than ``cutoff`` (never the last
    one, ``last``: the chain needs a head), move the anchor to the last deleted row; return
    the rows deleted and the ``audit.prune`` entry the caller chains in the same transaction
    (None: nothing to prune)."""
    row = db.execute(
        "SELECT seq, hash FROM audit WHERE ts < ? AND seq < ? ORDER BY seq DESC LIMIT 1",
        (cutoff, last),
    ).fetchone()
    if row is None:
        return None
    seq, digest = int(row[0]), str(row[1])
    deleted = int(db.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount)
    db.executemany(
        f"INSERT OR REPLACE INTO {meta} VALUES (?, ?)",
        [("anchor_seq", str(seq)), ("anchor_hash", digest)],
    )
    record = Entry(
        principal="plantd",
        service="audit",
        operation="audit.prune",
        outcome="ok",
        new={"pruned_through": seq, "anchor_hash": digest, "rows": deleted},
    )
    return deleted, record


def prune_rows(db: sqlite3.Connection, cutoff: float, now: float) -> int:
    """Delete rows older than ``cutoff`` (never the last one: the chain needs a head), move
    the anchor to the last deleted row and append an ``audit.prune`` row; rows deleted."""
    db.execute("BEGIN IMMEDIATE")
    try:
        dropped = drop_rows_before(db, cutoff, _last(db)[0])
        if dropped is None:
            db.execute("ROLLBACK")
            return 0
        deleted, record = dropped
        _insert_entries(db, [record], now)  # the same transaction: anchor and record together
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return deleted


def page_limit(limit: Any) -> int:
    """``limit`` of a page (absent: DEFAULT_PAGE); InvalidArgument naming the field."""
    if limit is None:
        return DEFAULT_PAGE
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument("limit: expected an integer >= 1", "limit")
    if limit > MAX_PAGE:
        raise InvalidArgument(f"limit: at most {MAX_PAGE}", "limit")
    return limit


def head_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@dataclass(frozen=True)
class AuditSource:
    """One hash chain of a host's trail: its name, the SQLite file holding its ``audit``
    table, the table holding its anchor, and its head sidecar."""

    name: str
    path: Path
    meta: str = META
    head: Path | None = None

    @property
    def head_path(self) -> Path:
        return self.head if self.head is not None else head_path_of(self.path)

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "path": str(self.path),
            "meta": self.meta,
            "head": str(self.head_path),
        }


def sources_dir(keyring_audit: Path) -> Path:
    """Where daemons register the chains they keep in their own databases (``audit.d``
    beside the keyring's ``audit.db``)."""
    return keyring_audit.parent / "audit.d"


def register_source(keyring_audit: Path, source: AuditSource) -> Path:
    """Record ``source`` so that ``plant audit`` and the Identity service find it."""
    if not source.name or not source.name.replace(".", "").replace("-", "").isalnum():
        raise InvalidArgument(f"audit source name {source.name!r}: letters, digits, . and -")
    folder = sources_dir(keyring_audit)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source.name}.json"
    write_durably(path, json.dumps(source.to_json(), sort_keys=True) + "\n", 0o600)
    return path


def host_sources(keyring_audit: Path) -> list[AuditSource]:
    """The keyring's chain (when its file exists) and every registered chain whose file
    exists, in name order after the keyring's."""
    found: list[AuditSource] = []
    if keyring_audit.exists():
        found.append(AuditSource(KEYRING_SOURCE, keyring_audit))
    folder = sources_dir(keyring_audit)
    for entry in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            doc = json.loads(entry.read_text(encoding="utf-8"))
            source = AuditSource(
                str(doc["name"]), Path(doc["path"]), str(doc["meta"]), Path(doc["head"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-written registration: its daemon writes it again on start
        if source.meta.isidentifier() and source.path.exists() and source.name != KEYRING_SOURCE:
            found.append(source)
    return found


class AuditLog:
    """A connection to the audit database. Several processes may append (the chain's end
    is read under SQLite's write lock); each append is one durable transaction.

    ``AuditLog.reader(source)`` opens a chain read-only (list and verify), also one kept in
    another daemon's database."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        meta: str = META,
        head_path: Path | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.head_path = head_path if head_path is not None else head_path_of(path)
        self.meta = meta
        self._clock = clock
        if read_only:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
            self._db.row_factory = sqlite3.Row
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        open_audit_db(self._db)

    @classmethod
    def reader(cls, source: AuditSource) -> AuditLog:
        return cls(source.path, meta=source.meta, head_path=source.head_path, read_only=True)

    def _has_chain(self) -> bool:
        tables = {
            r[0]
            for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name IN ('audit', ?)",
                (self.meta,),
            )
        }
        return tables == {"audit", self.meta}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def _anchor(self) -> tuple[int, str]:
        return _anchor(self._db, self.meta)

    def _last(self) -> tuple[int, str]:
        return _last(self._db, self.meta)

    def append(
        self,
        *,
        principal: str,
        service: str,
        operation: str,
        outcome: str,
        peer: str | None = None,
        scope: str | None = None,
        key: str | None = None,
        old: Any = None,
        new: Any = None,
        revision: int | None = None,
        request_id: str | None = None,
        ts: float | None = None,
    ) -> dict[str, Any]:
        """Append one row (one durable transaction), then move the sidecar head."""
        entry = Entry(
            principal, service, operation, outcome, peer, scope, key, old, new, revision,
            request_id, ts,
        )  # fmt: skip
        return self.append_many([entry])[0]

    def append_many(self, entries: list[Entry]) -> list[dict[str, Any]]:
        """Append a batch in one transaction, then move the sidecar head once."""
        rows = append_entries(self._db, entries, self._clock())
        self._write_head()
        return rows

    def head(self) -> Head:
        return read_head_of(self._db, self.meta)

    def _write_head(self) -> None:
        write_head(self._db, self.head_path)

    def read_head(self) -> Head | None:
        """The sidecar head, or None when there is none (a log never written)."""
        try:
            doc = json.loads(self.head_path.read_text(encoding="utf-8"))
            return Head(
                int(doc["seq"]), str(doc["hash"]), int(doc["anchor_seq"]), str(doc["anchor_hash"])
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return Head(-1, "", -1, "")  # unreadable: verify reports it

    def prune(self, *, retention: float = DEFAULT_RETENTION, now: float | None = None) -> int:
        """Delete rows older than ``retention`` seconds, keep the chain verifiable through an
        anchor, and record the pruning as an ``audit.prune`` row. Returns rows deleted."""
        when = self._clock() if now is None else now
        deleted = prune_rows(self._db, when - retention, when)
        self._write_head()
        return deleted

    # ------------------------------------------------------------------ reading
    def query(
        self,
        *,
        since: float | None = None,
        principal: str | None = None,
        scope: str | None = None,
        key: str | None = None,
        after: Any = None,
        limit: Any = None,
    ) -> Page:
        """Rows oldest first, paged by seq (``after`` = the last seq seen), per the shared
        paging contract: ``limit`` above MAX_PAGE or a bad cursor is an InvalidArgument."""
        limit = page_limit(limit)
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or after < 0
        ):
            raise InvalidArgument("after: expected the seq of the last row seen", "after")
        if not self._has_chain():  # a database whose daemon has not written a row yet
            return Page([], False, None)
        clauses: list[str] = ["seq > ?"]
        args: list[Any] = [after or 0]
        for column, value in (("principal", principal), ("scope", scope), ("key", key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("ts >= ?")
            args.append(since)
        sql = f"SELECT * FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
        rows = [dict(r) for r in self._db.execute(sql, [*args, limit + 1])]
        more = len(rows) > limit
        rows = rows[:limit]
        for r in rows:
            for field in ("old", "new"):
                r[field] = json.loads(r[field]) if r[field] is not None else None
        return Page(rows, more, rows[-1]["seq"] if more else None)

    def verify(self) -> VerifyResult:
        """Walk the chain from the anchor; the first row that does not fit is reported."""
        head = self.read_head()
        if not self._has_chain():
            if head is not None and head.seq != 0:
                return VerifyResult(False, 1, f"no audit rows but the head sidecar says {head.seq}")
            return VerifyResult(True)
        anchor_seq, anchor_hash = self._anchor()
        if head is not None and head.seq < 0:
            return VerifyResult(False, None, f"{self.head_path}: unreadable head sidecar")
        if head is not None and (head.anchor_seq, head.anchor_hash) != (anchor_seq, anchor_hash):
            return VerifyResult(
                False, anchor_seq + 1, "retention anchor differs from the head sidecar's"
            )
        expect_seq, prev = anchor_seq + 1, anchor_hash
        count = 0
        on_chain = head is None or head.seq == anchor_seq
        for r in self._db.execute("SELECT * FROM audit ORDER BY seq"):
            row = dict(r)
            seq = int(row["seq"])
            if seq != expect_seq:
                return VerifyResult(False, expect_seq, f"row {expect_seq} is missing", count)
            if row["prev_hash"] != prev:
                return VerifyResult(False, seq, "prev_hash does not match the previous row", count)
            try:
                digest = row_hash(row)
            except (TypeError, ValueError):
                digest = ""
            if digest != row["hash"]:
                return VerifyResult(False, seq, "row contents do not match its hash", count)
            if head is not None and seq == head.seq:
                if row["hash"] != head.hash:
                    return VerifyResult(False, seq, "hash differs from the head sidecar's", count)
                on_chain = True
            prev, expect_seq, count = row["hash"], seq + 1, count + 1
        if head is None and count:
            return VerifyResult(False, None, f"{self.head_path}: head sidecar is missing", count)
        if not on_chain and head is not None:
            return VerifyResult(
                False,
                expect_seq,
                f"log ends at seq {expect_seq - 1} but the head sidecar says {head.seq}"
                " (rows removed from the tail)",
                count,
            )
        return VerifyResult(True, None, "", count)


# ---------------------------------------------------------------------- a host's chains


def _cursor(after: Any) -> dict[str, int]:
    """``after`` of a merged listing: the ``next`` of the previous page, i.e. the last seq
    seen per source (an integer is the keyring's seq, as before there were several)."""
    if after is None:
        return {}
    if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
        return {KEYRING_SOURCE: after}
    if isinstance(after, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in after.items()
    ):
        return dict(after)
    raise InvalidArgument(
        "after: expected the 'next' of the previous page (the last seq per source)", "after"
    )


def merged_query(
    sources: list[AuditSource],
    *,
    since: float | None = None,
    principal: str | None = None,
    scope: str | None = None,
    key: str | None = None,
    after: Any = None,
    limit: Any = None,
) -> Page:
    """Rows of every chain merged by time (each row names its ``source``), paged per the
    shared contract: ``next`` holds the last seq returned per source (an integer while the
    keyring's chain is the only one), so concurrent appends are never skipped."""
    lim = page_limit(limit)
    cursor = _cursor(after)
    candidates: list[tuple[float, int, int, dict[str, Any]]] = []
    truncated = False
    for i, source in enumerate(sources):
        with AuditLog.reader(source) as log:
            page = log.query(
                since=since,
                principal=principal,
                scope=scope,
                key=key,
                after=cursor.get(source.name),
                limit=lim,
            )
        truncated = truncated or page.more
        for row in page.rows:
            row["source"] = source.name
            candidates.append((float(row["ts"]), i, int(row["seq"]), row))
    candidates.sort(key=lambda c: c[:3])
    rows = [c[3] for c in candidates[:lim]]
    more = truncated or len(candidates) > lim
    nxt = dict(cursor)
    for row in rows:
        nxt[row["source"]] = row["seq"]
    if not more:
        return Page(rows, False, None)
    if [s.name for s in sources] == [KEYRING_SOURCE]:
        return Page(rows, True, nxt[KEYRING_SOURCE])
    return Page(rows, True, nxt)


def verify_sources(sources: list[AuditSource]) -> dict[str, Any]:
    """Verify every chain on its own: ``ok`` when all are; the first broken one is named
    (``source``, ``first_bad_seq``, ``reason``); ``sources`` has each chain's result."""
    results: list[dict[str, Any]] = []
    for source in sources:
        with AuditLog.reader(source) as log:
            r = log.verify()
        results.append(
            {
                "source": source.name,
                "path": str(source.path),
                "ok": r.ok,
                "rows": r.rows,
                "first_bad_seq": r.first_bad_seq,
                "reason": r.reason or None,
            }
        )
    bad = next((r for r in results if not r["ok"]), None)
    return {
        "ok": bad is None,
        "rows": sum(r["rows"] for r in results),
        "first_bad_seq": bad["first_bad_seq"] if bad else None,
        "reason": f"{bad['source']} ({bad['path']}): {bad['reason']}" if bad else None,
        "source": bad["source"] if bad else None,
        "sources": results,
    }
