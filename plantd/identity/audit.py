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
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def stored_value(value: Any) -> str | None:
    """The JSON text kept for an old/new value: the value, or its digest when it is large."""
    if value is None:
        return None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8")
    if len(raw) <= VALUE_LIMIT:
        return text
    digest = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    return json.dumps(digest, sort_keys=True, separators=(",", ":"))


def row_hash(row: dict[str, Any]) -> str:
    """sha256(prev_hash + canonical JSON of the row's columns but ``hash``)."""
    canonical = json.dumps(
        [row[c] for c in COLUMNS], separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((row["prev_hash"] + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool
    next: int | None


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


def _meta(db: sqlite3.Connection, name: str, default: str) -> str:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else default


def _anchor(db: sqlite3.Connection) -> tuple[int, str]:
    return int(_meta(db, "anchor_seq", "0")), _meta(db, "anchor_hash", GENESIS)


def _last(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else _anchor(db)


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
    db: sqlite3.Connection, entries: list[Entry], now: float
) -> list[dict[str, Any]]:
    """Chain ``entries`` after the last row and insert them (inside the caller's transaction)."""
    seq, prev = _last(db)
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq,
            "ts": float(now if e.ts is None else e.ts),
            "principal": e.principal,
            "peer": e.peer,
            "service": e.service,
            "operation": e.operation,
            "scope": e.scope,
            "key": e.key,
            "old": stored_value(e.old),
            "new": stored_value(e.new),
            "revision": e.revision,
            "request_id": e.request_id,
            "outcome": e.outcome,
            "prev_hash": prev,
        }
        row["hash"] = prev = row_hash(row)
        rows.append(row)
    db.executemany(
        f"INSERT INTO audit VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
        [[r[c] for c in (*COLUMNS, "hash")] for r in rows],
    )
    return rows


def read_head_of(db: sqlite3.Connection) -> Head:
    """The chain's head as the database says (what the sidecar and the bus carry)."""
    seq, digest = _last(db)
    anchor_seq, anchor_hash = _anchor(db)
    return Head(seq, digest, anchor_seq, anchor_hash)


def write_head(db: sqlite3.Connection, head_path: Path) -> Head:
    """Move the sidecar to the database's head (temporary file, fsync, rename)."""
    head = read_head_of(db)
    doc = {
        "seq": head.seq,
        "hash": head.hash,
        "anchor_seq": head.anchor_seq,
        "anchor_hash": head.anchor_hash,
    }
    write_durably(head_path, json.dumps(doc, sort_keys=True) + "\n", 0o600)
    return head


def prune_rows(db: sqlite3.Connection, cutoff: float, now: float) -> int:
    """Delete rows older than ``cutoff`` (never the last one: the chain needs a head), move
    the anchor to the last deleted row and append an ``audit.prune`` row; rows deleted."""
    db.execute("BEGIN IMMEDIATE")
    try:
        last, _ = _last(db)
        row = db.execute(
            "SELECT seq, hash FROM audit WHERE ts < ? AND seq < ? ORDER BY seq DESC LIMIT 1",
            (cutoff, last),
        ).fetchone()
        if row is None:
            db.execute("ROLLBACK")
            return 0
        seq, digest = int(row[0]), str(row[1])
        deleted = int(db.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount)
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("anchor_seq", str(seq)), ("anchor_hash", digest)],
        )
        record = Entry(
            principal="plantd",
            service="audit",
            operation="audit.prune",
            outcome="ok",
            new={"pruned_through": seq, "anchor_hash": digest, "rows": deleted},
        )
        _insert_entries(db, [record], now)  # the same transaction: anchor and record together
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return deleted


def head_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".head")


class AuditLog:
    """A connection to the audit database. Several processes may append (the chain's end
    is read under SQLite's write lock); each append is one durable transaction."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.head_path = head_path_of(path)
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        open_audit_db(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def _anchor(self) -> tuple[int, str]:
        return _anchor(self._db)

    def _last(self) -> tuple[int, str]:
        return _last(self._db)

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
        return read_head_of(self._db)

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
        if limit is None:
            limit = DEFAULT_PAGE
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument("limit: expected an integer >= 1", "limit")
        if limit > MAX_PAGE:
            raise InvalidArgument(f"limit: at most {MAX_PAGE}", "limit")
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or after < 0
        ):
            raise InvalidArgument("after: expected the seq of the last row seen", "after")
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
        anchor_seq, anchor_hash = self._anchor()
        head = self.read_head()
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
