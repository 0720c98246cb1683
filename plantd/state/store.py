"""Durable scoped key-value store of the state service (SQLite through aiosqlite).

Design (see ``docs/state.md``):

* exactly one writer connection (SQLite 3.40 has the WAL-reset bug with two writers) owned by
  a single committer task; callers enqueue operations and the committer applies everything
  queued in ONE transaction (group commit), COMMITs with ``synchronous=FULL`` and only then
  resolves the callers' futures, so an acknowledged write is durable;
* operations validate (read) before they write, so a failing compare or a missing key never
  touches the database and never fails the other operations of the batch; an SQLite error
  rolls the whole batch back and every caller of that batch gets ``StorageError``;
* reads go through a separate read-only connection (WAL readers never block the writer) and
  see committed data only;
* revisions follow etcd: one global revision, +1 per committed change; a txn is one change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from plantd.protocol import jsoncodec
from plantd.state import pages
from plantd.state.counts import Delta, KeyCounts
from plantd.state.errors import (
    Compacted,
    Conflict,
    CorruptDatabase,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    StateError,
    StorageError,
    StoreLocked,
)

__all__ = ["Event", "Limits", "Listener", "StateStore"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

Event = dict[str, Any]
"""A change ``{scope, key, op, value, revision, ts}``; op: set|delete|create-scope|delete-scope."""
Listener = Callable[[Event], Awaitable[None] | None]

_SCHEMA = """
CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE scopes(
    name TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE kv(
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    expires REAL,
    PRIMARY KEY(scope, key)
) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv(expires) WHERE expires IS NOT NULL;
CREATE TABLE changes(
    revision INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    op TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT,
    value TEXT,
    ts REAL NOT NULL,
    PRIMARY KEY(revision, idx)
) WITHOUT ROWID;
CREATE TABLE requests(
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    ts REAL NOT NULL
);
"""
_TABLES = {"meta", "scopes", "kv", "changes", "requests"}
#: the open-time probe of a database too large for quick_check: first and last row of each
#: table and index (a damaged b-tree page on those paths raises SQLITE_CORRUPT)
_PROBES = tuple(
    f"SELECT * FROM (SELECT {cols} FROM {table} ORDER BY {cols} LIMIT 1)"
    f" UNION ALL SELECT * FROM (SELECT {cols} FROM {table} ORDER BY {desc} LIMIT 1)"
    for table, cols, desc in (
        ("meta", "name", "name DESC"),
        ("scopes", "name", "name DESC"),
        ("kv", "scope, key", "scope DESC, key DESC"),
        ("changes", "revision, idx", "revision DESC, idx DESC"),
        ("requests", "seq", "seq DESC"),
    )
)
_OP_FIELDS = frozenset({"op", "scope", "key", "value", "ttl", "prev_revision", "if_absent"})


@dataclass(frozen=True)
class Limits:
    """Request limits; sizes are UTF-8 bytes so they bound what travels on the wire.

    The default value limit keeps a get reply well inside the broker's 1 MiB message limit.
    """

    max_scope_length: int = 128
    max_key_length: int = 512
    max_value_bytes: int = 512 * 1024
    max_txn_ops: int = 128
    max_request_id_length: int = 128
    max_ttl: float = 10 * 365 * 86400.0


# --------------------------------------------------------------------------- validation


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""Value text inside request fingerprints: the stdlib's, as in every stored fingerprint so far
(stored value text comes from orjson, which writes some floats differently, e.g. 1e-7)."""


def _encode_value(value: Any, limits: Limits, what: str) -> str:
    """Compact JSON text of a value as stored; NaN, Infinity and non-JSON types refused."""
    try:
        data = jsoncodec.dumps_strict(value)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what}: value is not JSON-serializable: {e}") from None
    if len(data) > limits.max_value_bytes:
        raise LimitExceeded("max_value_bytes", limits.max_value_bytes, len(data), what)
    return data.decode()


def _check_name(name: Any, kind: str, limit_name: str, maximum: int) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{kind} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise InvalidArgument(f"{kind} {name!r} contains a NUL character")
    if name.isascii():  # O(1) in CPython: 1 byte per character, valid UTF-8
        if len(name) > maximum:
            raise LimitExceeded(limit_name, maximum, len(name), f"{kind} {name[:32]!r}...")
        return name
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > maximum:
        raise LimitExceeded(limit_name, maximum, size, f"{kind} {name[:32]!r}...")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{kind} {name!r} is not valid UTF-8 text") from None
    return name


def _check_scope(scope: Any, limits: Limits) -> str:
    return _check_name(scope, "scope", "max_scope_length", limits.max_scope_length)


def _check_key(key: Any, limits: Limits) -> str:
    return _check_name(key, "key", "max_key_length", limits.max_key_length)


def _check_revision(rev: Any, name: str) -> int | None:
    if rev is None:
        return None
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
        raise InvalidArgument(f"{name} must be an integer >= 0, got {rev!r}")
    return rev


def _check_ttl(ttl: Any, limits: Limits) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise InvalidArgument(f"ttl must be a number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise InvalidArgument(f"ttl must be > 0 seconds, got {ttl!r}")
    if ttl > limits.max_ttl:
        raise LimitExceeded("max_ttl", limits.max_ttl, ttl, "ttl")
    return float(ttl)


def _check_request_id(request_id: Any, limits: Limits) -> str | None:
    if request_id is None:
        return None
    return _check_name(
        request_id, "request_id", "max_request_id_length", limits.max_request_id_length
    )


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- db thread

_T = TypeVar("_T")


def _on_db_thread(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], _T]
) -> Awaitable[_T]:
    """Run ``fn(raw sqlite3 connection)`` on ``conn``'s worker thread as ONE hand-off.

    Every aiosqlite call is a round trip to that thread, and those round trips (not fsync)
    dominated the cost of a write batch; a whole batch now runs as one synchronous function.
    FIFO order with the connection's other calls is kept (same queue, same thread).
    aiosqlite has no public API for this: ``_execute`` and ``_conn`` are private (0.17-0.22);
    tests/state/test_store_perf_paths.py fails if they disappear.
    """
    return conn._execute(lambda: fn(conn._conn))


def _check_db_thread_api(conn: aiosqlite.Connection) -> None:
    """Fail at open, not on the first write, if aiosqlite dropped the private API we use."""
    if not callable(getattr(conn, "_execute", None)) or not hasattr(type(conn), "_conn"):
        raise StorageError(
            f"aiosqlite {getattr(aiosqlite, '__version__', '?')} lacks Connection._execute/_conn"
            " (used to run a write batch in one call on the database thread)"
        )


# --------------------------------------------------------------------------- batch context

_LOOKUP_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
    " k.create_revision, k.mod_revision, k.version, k.expires"
    " FROM (SELECT 1) LEFT JOIN kv k ON k.scope=?1 AND k.key=?2"
)
_UPSERT_SQL = (
    "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
    " expires) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(scope, key) DO UPDATE SET"
    " value=excluded.value, create_revision=excluded.create_revision,"
    " mod_revision=excluded.mod_revision, version=excluded.version,"
    " updated=excluded.updated, expires=excluded.expires"
)
_UPSERT_JSON_SQL = (
    "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
    " expires) SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),"
    " json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),"
    " json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), ?2, NULL"
    " FROM json_each(?1) j WHERE true ON CONFLICT(scope, key) DO UPDATE SET"
    " value=excluded.value, create_revision=excluded.create_revision,"
    " mod_revision=excluded.mod_revision, version=excluded.version,"
    " updated=excluded.updated, expires=excluded.expires"
)
"""_UPSERT_SQL for many rows without TTL as ONE statement; ``updated`` is bound, not sent
through JSON, so every float is stored bit for bit."""
_DELETE_KEY_SQL = "DELETE FROM kv WHERE scope=? AND key=?"
_LOOKUP_MANY_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
    " (SELECT json_group_array(json_array(j.key, k.create_revision, k.mod_revision,"
    " k.version, k.expires IS NOT NULL AND k.expires <= ?3))"
    " FROM json_each(?2) j LEFT JOIN kv k ON k.scope=?1 AND k.key=j.value)"
)
"""States of many keys of one scope as ONE row: every row a cursor yields is one more
sqlite3_step, i.e. one more release and re-take of the GIL (a 100-key txn took 101). Items are
``[index, create, mod, version, expired]``; expiry is decided in SQL against the bound
``now``, so no float goes through JSON."""
_INSERT_CHANGES_SQL = (
    "INSERT INTO changes(revision, idx, op, scope, key, value, ts) VALUES(?,?,?,?,?,?,?)"
)
_INSERT_CHANGES_JSON_SQL = (
    "INSERT INTO changes(revision, idx, op, scope, key, value, ts)"
    " SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),"
    " json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),"
    " json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), ?2 FROM json_each(?1) j"
)
_ROWS_VIA_JSON_MAX = 256 * 1024
"""Rows carrying up to this much value text in total are written by ONE statement from ONE
JSON parameter: SQLite expands them with the GIL released, where ``executemany`` binds and
steps row by row holding it between rows (the writer's thread then competes with the event
loop for every row). Bigger batches go row by row: each json_extract re-reads its row."""


def _write_rows(
    db: sqlite3.Connection,
    json_each: bool,
    rows: list[tuple[Any, ...]],
    text_at: int,
    now: float,
    many_sql: str,
    json_sql: str,
) -> None:
    """Insert ``rows`` (each ending in fields the JSON statement binds as ``now``/NULL)."""
    if len(rows) == 1:
        db.execute(many_sql, rows[0])
    elif json_each and sum(len(r[text_at] or "") for r in rows) <= _ROWS_VIA_JSON_MAX:
        db.execute(json_sql, (jsoncodec.dumps(rows).decode(), now))
    else:
        db.executemany(many_sql, rows)


_UPDATE_META_SQL = (
    "UPDATE meta SET value = CASE name WHEN 'revision' THEN ?1 ELSE ?2 END"
    " WHERE name IN ('revision', 'compact_revision')"
)
_GET_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1), k.value, k.create_revision,"
    " k.mod_revision, k.version, k.updated, k.expires,"
    " (SELECT value FROM meta WHERE name='revision')"
    " FROM (SELECT 1) LEFT JOIN kv k ON k.scope=?1 AND k.key=?2"
    " AND (k.expires IS NULL OR k.expires > ?3)"
)


def _get_rows(reqs: list[tuple[str, str, float]], db: sqlite3.Connection) -> list[Any]:
    """Rows for a round of gets (reader thread); a failing statement fails only its get."""
    out: list[Any] = []
    for scope, key, now in reqs:
        try:
            out.append(db.execute(_GET_SQL, (scope, key, now)).fetchone())
        except sqlite3.Error as e:
            out.append(e)
    return out


@dataclass
class _KeyState:
    scope_exists: bool
    row: tuple[int, int, int] | None  # (create_revision, mod_revision, version) if live
    expired: bool  # a row exists but its TTL passed (treated as absent)

    @property
    def mod_revision(self) -> int:
        return self.row[1] if self.row else 0


_ABSENT = _KeyState(False, None, False)


class _Batch:
    """Working state of one group-commit transaction (discarded on rollback).

    Runs entirely on the writer's thread (synchronous sqlite3 calls, no hand-offs).
    """

    def __init__(
        self, db: sqlite3.Connection, revision: int, now: float, json_each: bool = True
    ) -> None:
        self.db = db
        self.json_each = json_each  # SQLite has JSON1 (always since 3.38)
        self.revision = revision
        self.now = now
        self.events: list[Event] = []
        self.change_rows: list[tuple[Any, ...]] = []
        self.request_rows: list[tuple[str, str, str, float]] = []
        self.requests: dict[str, tuple[str, str]] = {}
        self._idx = 0
        # rows added (+) / removed (-) per scope; None = unknown (see plantd.state.counts)
        self.key_deltas: dict[str, Delta] = {}
        self.reset_counts = False

    def count(self, scope: str, delta: Delta) -> None:
        old = self.key_deltas.get(scope, 0)
        self.key_deltas[scope] = None if old is None or delta is None else old + delta

    def begin_change(self) -> int:
        self.revision += 1
        self._idx = 0
        return self.revision

    def emit(
        self, rev: int, op: str, scope: str, key: str | None, text: str | None, value: Any
    ) -> None:
        now = self.now
        self.change_rows.append((rev, self._idx, op, scope, key, text, now))
        self._idx += 1
        self.events.append(
            {"scope": scope, "key": key, "op": op, "value": value, "revision": rev, "ts": now}
        )

    def lookup(self, scope: str, key: str) -> _KeyState:
        exists, crev, mrev, ver, expires = self.db.execute(_LOOKUP_SQL, (scope, key)).fetchone()
        return self._state(bool(exists), crev, mrev, ver, expires)

    def lookup_many(self, ops: list[_KeyOp]) -> list[_KeyState]:
        """States of a txn's keys: one fixed statement per scope instead of one per key."""
        if len(ops) == 1 or not self.json_each:
            return [self.lookup(o.scope, o.key) for o in ops]
        by_scope: dict[str, list[int]] = {}
        for i, o in enumerate(ops):
            by_scope.setdefault(o.scope, []).append(i)
        states: list[_KeyState] = [_ABSENT] * len(ops)
        for scope, idxs in by_scope.items():
            # raw UTF-8 (orjson never writes surrogate-pair escapes for SQLite to decode)
            keys = jsoncodec.dumps([ops[i].key for i in idxs]).decode()
            found, rows = self.db.execute(_LOOKUP_MANY_SQL, (scope, keys, self.now)).fetchone()
            exists = bool(found)
            for j, crev, mrev, ver, expired in jsoncodec.loads(rows):
                if crev is None:
                    states[idxs[j]] = _KeyState(exists, None, False)
                else:
                    live = None if expired else (crev, mrev, ver)
                    states[idxs[j]] = _KeyState(exists, live, bool(expired))
        return states

    def _state(self, exists: bool, crev: Any, mrev: Any, ver: Any, expires: Any) -> _KeyState:
        if crev is None:
            return _KeyState(exists, None, False)
        if expires is not None and expires <= self.now:
            return _KeyState(exists, None, True)
        return _KeyState(exists, (crev, mrev, ver), False)

    def expire(self, scope: str, key: str) -> None:
        """Delete a key whose TTL passed: a change with its own revision, like any delete."""
        self.db.execute(_DELETE_KEY_SQL, (scope, key))
        self.count(scope, -1)
        self.emit(self.begin_change(), "delete", scope, key, None, None)

    def create_scope(self, rev: int, scope: str) -> None:
        self.db.execute(
            "INSERT INTO scopes(name, create_revision, created) VALUES(?,?,?)",
            (scope, rev, self.now),
        )
        self.emit(rev, "create-scope", scope, None, None, None)


@dataclass
class _Committed:
    """What a committed batch hands back to the event loop."""

    outcomes: list[tuple[bool, Any]]
    events: list[Event]
    revision: int
    compact: int
    history: int
    requests: int
    key_deltas: dict[str, Delta]
    reset_counts: bool


@dataclass
class _Drained:
    """One drain of the write queue: its writes and the commit (or the error) they got."""

    batch: list[tuple[_Op, asyncio.Future[Any]]]
    committed: _Committed | None
    error: BaseException | None


_DRAINS_AHEAD = 2
"""Drain jobs queued on the writer's thread: one committing, one ready to take the next batch."""


# --------------------------------------------------------------------------- operations


class _Op:
    """A write queued for the committer. ``apply`` must raise StateError only before writing.

    ``apply`` runs on the writer's thread inside the batch transaction.
    """

    request_id: str | None = None

    def fingerprint(self) -> str:
        raise NotImplementedError

    def apply(self, b: _Batch) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class _KeyOp:
    """One set/delete/check of a txn (or a standalone set/delete)."""

    op: str  # set | delete | check
    scope: str
    key: str
    text: str | None = None
    value: Any = None
    ttl: float | None = None
    prev_revision: int | None = None  # 0 = must not exist

    def compare(self, st: _KeyState, index: int | None) -> None:
        cur = st.mod_revision
        prev = self.prev_revision
        if (prev is None or prev == cur) and (self.op != "delete" or st.row is not None):
            return  # the common case: no error message to build
        where = f"{self.scope}/{self.key}" + (f" (txn op {index})" if index is not None else "")
        extra: dict[str, Any] = {"scope": self.scope, "key": self.key}
        if index is not None:
            extra["index"] = index
        if prev is not None and prev != cur:
            if prev == 0:
                msg = f"compare failed for {where}: key must not exist, it has mod_revision {cur}"
            elif cur == 0:
                msg = (
                    f"compare failed for {where}: expected mod_revision {prev}, key does not exist"
                )
            else:
                msg = f"compare failed for {where}: expected mod_revision {prev}, current is {cur}"
            raise Conflict(msg, current_revision=cur, **extra)
        what = "key" if st.scope_exists else "scope"
        name = f"{self.key!r} in scope {self.scope!r}" if st.scope_exists else repr(self.scope)
        raise NotFound(f"cannot delete {where}: {what} {name} not found", **extra)

    def describe(self) -> list[Any]:
        text = _CANONICAL.encode(self.value) if self.op == "set" else None
        return [self.op, self.scope, self.key, text, self.ttl, self.prev_revision]


class _TxnOp(_Op):
    """Standalone set/delete (``single``) or an atomic txn: all compares pass or nothing."""

    def __init__(self, ops: list[_KeyOp], request_id: str | None, single: bool) -> None:
        self.ops = ops
        self.request_id = request_id
        self.single = single

    def fingerprint(self) -> str:
        return _fingerprint("txn" if not self.single else "op", [o.describe() for o in self.ops])

    def apply(self, b: _Batch) -> dict[str, Any]:
        ops = self.ops
        states = b.lookup_many(ops)
        for i, (o, st) in enumerate(zip(ops, states, strict=True)):
            o.compare(st, None if self.single else i)
        if all(o.op == "check" for o in ops):
            # compare-only txn: nothing changes, no new revision
            results = [
                {"scope": o.scope, "key": o.key, "mod_revision": st.mod_revision}
                for o, st in zip(ops, states, strict=True)
            ]
            return {"revision": b.revision, "results": results}
        for o, st in zip(ops, states, strict=True):
            if st.expired and o.op != "check":
                b.expire(o.scope, o.key)
        rev = b.begin_change()
        now = b.now
        results: list[dict[str, Any]] = []
        scopes_made: set[str] = set()
        puts: list[tuple[Any, ...]] = []
        any_ttl = False
        dels: list[tuple[str, str]] = []
        # a key appears once per txn, so its rows can be written together after the loop
        for o, st in zip(ops, states, strict=True):
            scope, key = o.scope, o.key
            if o.op == "set":
                if not st.scope_exists and scope not in scopes_made:
                    b.create_scope(rev, scope)
                    scopes_made.add(scope)
                crev, version = (st.row[0], st.row[2] + 1) if st.row else (rev, 1)
                if st.row is None:  # an expired row was deleted just above
                    b.count(scope, 1)
                if o.ttl is None:
                    expires = None
                else:
                    expires = now + o.ttl
                    any_ttl = True
                puts.append((scope, key, o.text, crev, rev, version, now, expires))
                b.emit(rev, "set", scope, key, o.text, o.value)
                results.append(
                    {
                        "scope": scope,
                        "key": key,
                        "revision": rev,
                        "create_revision": crev,
                        "mod_revision": rev,
                        "version": version,
                    }
                )
            elif o.op == "delete":
                dels.append((scope, key))
                b.count(scope, -1)
                b.emit(rev, "delete", scope, key, None, None)
                results.append(
                    {
                        "scope": scope,
                        "key": key,
                        "revision": rev,
                        "prev_mod_revision": st.mod_revision,
                    }
                )
            else:
                results.append({"scope": scope, "key": key, "mod_revision": st.mod_revision})
        if puts:
            # the JSON statement stores updated=now, expires=NULL: TTL rows go row by row
            _write_rows(
                b.db,
                b.json_each and not any_ttl,
                puts,
                2,
                now,
                _UPSERT_SQL,
                _UPSERT_JSON_SQL,
            )
        if dels:
            b.db.executemany(_DELETE_KEY_SQL, dels)
        if self.single:
            return results[0]
        return {"revision": rev, "results": results}


class _CreateScopeOp(_Op):
    def __init__(self, scope: str, request_id: str | None) -> None:
        self.scope = scope
        self.request_id = request_id

    def fingerprint(self) -> str:
        return _fingerprint("create-scope", self.scope)

    def apply(self, b: _Batch) -> dict[str, Any]:
        found = b.db.execute(
            "SELECT create_revision FROM scopes WHERE name=?", (self.scope,)
        ).fetchone()
        if found:
            return {
                "scope": self.scope,
                "created": False,
                "revision": b.revision,
                "create_revision": found[0],
            }
        rev = b.begin_change()
        b.create_scope(rev, self.scope)
        return {"scope": self.scope, "created": True, "revision": rev, "create_revision": rev}


class _DeleteScopeOp(_Op):
    def __init__(self, scope: str, request_id: str | None) -> None:
        self.scope = scope
        self.request_id = request_id

    def fingerprint(self) -> str:
        return _fingerprint("delete-scope", self.scope)

    def apply(self, b: _Batch) -> dict[str, Any]:
        exists, live = b.db.execute(
            "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
            " (SELECT count(*) FROM kv WHERE scope=?1 AND (expires IS NULL OR expires > ?2))",
            (self.scope, b.now),
        ).fetchone()
        if not exists:
            raise NotFound(f"scope {self.scope!r} not found", scope=self.scope)
        rev = b.begin_change()
        b.db.execute("DELETE FROM kv WHERE scope=?", (self.scope,))
        b.db.execute("DELETE FROM scopes WHERE name=?", (self.scope,))
        b.count(self.scope, None)
        b.emit(rev, "delete-scope", self.scope, None, None, None)
        return {"scope": self.scope, "revision": rev, "deleted_keys": live}


class _ReapOp(_Op):
    """Delete up to ``limit`` expired keys, each its own revision (bounded work per pass)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def apply(self, b: _Batch) -> dict[str, Any]:
        rows = b.db.execute(
            "SELECT scope, key FROM kv WHERE expires IS NOT NULL AND expires <= ?"
            " ORDER BY expires LIMIT ?",
            (b.now, self.limit),
        ).fetchall()
        if rows:
            b.db.executemany(_DELETE_KEY_SQL, rows)
        for scope, key in rows:
            b.count(scope, -1)
            b.emit(b.begin_change(), "delete", scope, key, None, None)
        return {"expired": len(rows)}


class _ImportOp(_Op):
    """Load an export document as ONE change (one revision, one event per scope/key)."""

    def __init__(
        self, scopes: dict[str, list[tuple[str, str, Any]]], replace: bool, request_id: str | None
    ) -> None:
        self.scopes = scopes
        self.replace = replace
        self.request_id = request_id

    def fingerprint(self) -> str:
        items = {s: [(k, _CANONICAL.encode(v)) for k, _, v in kv] for s, kv in self.scopes.items()}
        return _fingerprint("import", self.replace, items)

    def apply(self, b: _Batch) -> dict[str, Any]:
        existing = {r[0] for r in b.db.execute("SELECT name FROM scopes")}
        rev = b.begin_change()
        if self.replace:
            for scope in sorted(existing):
                b.emit(rev, "delete-scope", scope, None, None, None)
            b.db.execute("DELETE FROM kv")
            b.db.execute("DELETE FROM scopes")
            b.reset_counts = True
            existing = set()
        keys = 0
        for scope, items in self.scopes.items():
            if scope not in existing:
                b.create_scope(rev, scope)
            b.count(scope, None)  # updates and inserts are not told apart here
            rows = []
            for key, text, value in items:
                rows.append((scope, key, text, rev, rev, b.now, b.now))
                b.emit(rev, "set", scope, key, text, value)
            # an update keeps create_revision and bumps version; a missing/expired key restarts
            b.db.executemany(
                "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
                " expires) VALUES(?1,?2,?3,?4,?5,1,?6,NULL) ON CONFLICT(scope, key) DO UPDATE SET"
                " create_revision=CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?7"
                "   THEN excluded.create_revision ELSE kv.create_revision END,"
                " version=CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?7"
                "   THEN 1 ELSE kv.version + 1 END,"
                " value=excluded.value, mod_revision=excluded.mod_revision,"
                " updated=excluded.updated, expires=NULL",
                rows,
            )
            keys += len(rows)
        return {"revision": rev, "scopes": len(self.scopes), "keys": keys}


def _export_doc(
    rev: int, scopes: dict[str, dict[str, Any]], count: int, cursor: tuple[str, str] | None
) -> dict[str, Any]:
    """One export page: the export document of its scopes plus the paging fields."""
    return {
        "format": "plantd-state",
        "version": 1,
        "revision": rev,
        "scopes": scopes,
        "count": count,
        "more": cursor is not None,
        "next": {"scope": cursor[0], "key": cursor[1]} if cursor else None,
    }


# --------------------------------------------------------------------------- file helpers


class _FileLock:
    """Exclusive non-blocking flock on ``<db>.lock``; the file records the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, db_path: Path) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = "unknown"
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(
                    f"state database {db_path} is already open by another store (pid {holder});"
                    f" lock file {self.path}",
                    pid=int(holder) if holder.isdigit() else None,
                    path=str(db_path),
                ) from None
            raise StorageError(f"cannot lock {self.path}: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            # keep the file: unlinking it would race with a concurrent opener
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def _precheck_file(path: Path) -> bool:
    """Cheap checks before SQLite touches the file; returns False if it is new/empty."""
    if not path.exists():
        return False
    if not path.is_file():
        raise StorageError(f"cannot open state database {path}: not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(f"cannot open state database {path}: permission denied (need rw)")
    size = path.stat().st_size
    if size == 0:
        return False
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as e:
        raise StorageError(f"cannot read state database {path}: {e.strerror}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise CorruptDatabase(
            f"{path} is not an SQLite database (bad header, {size} bytes); refusing to open it,"
            " the file was not modified",
            path=str(path),
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(header[28:32], "big")
    counter, valid_for = header[24:28], header[92:96]
    wal = path.with_name(path.name + "-wal")
    wal_pending = wal.exists() and wal.stat().st_size > 0
    # with WAL content a crash mid-checkpoint can legitimately leave the file short: SQLite
    # sizes the database from the WAL then, and quick_check still reads every page
    if n_pages and counter == valid_for and not wal_pending and size < n_pages * page_size:
        raise CorruptDatabase(
            f"{path} is truncated: header says {n_pages * page_size} bytes, file has {size};"
            " refusing to open it, the file was not modified (restore a backup)",
            path=str(path),
        )
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _scalar(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return next(iter(await conn.execute_fetchall(sql, params)))[0]


def _storage_error(action: str, e: BaseException) -> StorageError:
    name = getattr(e, "sqlite_errorname", None) or type(e).__name__
    return StorageError(f"{action} failed: {e} ({name}); nothing was applied", cause=name)


# --------------------------------------------------------------------------- the store


class StateStore:
    """Async scoped key-value store; create with ``await StateStore.open(path)``."""

    def __init__(self) -> None:  # use open()
        self.path: Path
        self.limits: Limits
        self._writer: aiosqlite.Connection
        self._reader: aiosqlite.Connection
        self._lock: _FileLock
        self._gets: list[tuple[str, str, float, asyncio.Future[tuple[Any, ...]]]] = []
        self._get_task: asyncio.Task[None] | None = None
        # writes waiting for a drain: appended on the event loop, taken on the writer's thread
        self._pending: collections.deque[tuple[_Op, asyncio.Future[Any]]] = collections.deque()
        self._drains: asyncio.Queue[asyncio.Future[_Drained | None] | None] = asyncio.Queue()
        self._outstanding = 0  # drains started and not yet adopted by the committer
        self._stopping = False
        # (revision, compact_revision, history events, request ids) as of the last commit:
        # owned by the writer's thread once the committer runs
        self._wstate = (0, 0, 0, 0)
        self._listeners: list[Listener] = []
        self._committer: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._counter: asyncio.Task[None] | None = None
        self._closed = False
        self.revision = 0
        self.compact_revision = 0
        self._history_count = 0
        self._request_count = 0
        self.commits = 0
        """Number of COMMITted write transactions (group commit makes this << writes)."""
        self.ops_applied = 0
        self.last_error: str | None = None
        self._json_each = True
        self._counts = KeyCounts()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        limits: Limits | None = None,
        history_size: int = 10_000,
        request_history: int = 10_000,
        batch_max: int = 256,
        reap_interval: float = 1.0,
        reap_batch: int = 256,
        clock: Callable[[], float] = time.time,
        verify_max_bytes: int = 64 << 20,
        cache_bytes: int = 64 << 20,
    ) -> StateStore:
        """Open (or create) the database; refuse locked, corrupt or foreign files untouched."""
        if history_size < 0 or request_history < 0 or batch_max < 1 or reap_batch < 1:
            raise InvalidArgument("history sizes must be >= 0, batch sizes >= 1")
        self = cls()
        self.path = Path(path)
        self.limits = limits or Limits()
        self._history_size = history_size
        self._request_history = request_history
        self._batch_max = batch_max
        self._reap_interval = reap_interval
        self._reap_batch = reap_batch
        self._clock = clock
        self._verify_max_bytes = verify_max_bytes
        self._cache_bytes = cache_bytes
        if not self.path.parent.is_dir():
            raise StorageError(f"cannot open state database {self.path}: no such directory")
        self._lock = _FileLock(self.path.with_name(self.path.name + ".lock"))
        self._lock.acquire(self.path)
        try:
            await self._open_connections()
        except BaseException:
            self._lock.release()
            raise
        self._committer = asyncio.create_task(self._commit_loop(), name="state-committer")
        self._reaper = asyncio.create_task(self._reap_loop(), name="state-reaper")
        self._counter = asyncio.create_task(self._count_all(), name="state-key-count")
        return self

    async def _open_connections(self) -> None:
        existed = _precheck_file(self.path)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open state database {self.path}: {e}") from None
        try:
            _check_db_thread_api(self._writer)
            if existed:
                await self._verify()
            await self._configure_writer(existed)
            self._reader = await aiosqlite.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        except BaseException:
            await self._writer.close()
            raise
        await self._load_meta()

    async def _verify(self) -> None:
        """Check before anything writes: a damaged file is refused, never repaired.

        ``quick_check`` reads every page, so it runs only on files up to
        ``verify_max_bytes``; a larger file gets a probe of both ends of every table (root
        to first and last leaf) so opening it costs the same at 10^3 or 10^6 keys.
        """
        try:
            tables = {
                r[0]
                for r in await self._writer.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
            if self.path.stat().st_size <= self._verify_max_bytes:
                sql = "PRAGMA quick_check(20)"
                rows = [r[0] for r in await self._writer.execute_fetchall(sql)]
            else:
                if _TABLES <= tables:
                    for probe in _PROBES:
                        await self._writer.execute_fetchall(probe)
                rows = ["ok"]
        except sqlite3.DatabaseError as e:
            raise CorruptDatabase(
                f"{self.path} is damaged: {e}; refusing to open it, the file was not modified"
                " (restore a backup)",
                path=str(self.path),
            ) from None
        if rows != ["ok"]:
            raise CorruptDatabase(
                f"{self.path} failed quick_check: {'; '.join(map(str, rows[:5]))}; refusing to"
                " open it, the file was not modified (restore a backup)",
                path=str(self.path),
            )
        if tables and not _TABLES <= tables:
            raise CorruptDatabase(
                f"{self.path} is an SQLite database but not a plantd state store"
                f" (tables: {', '.join(sorted(tables))}); refusing to open it",
                path=str(self.path),
            )
        if tables:
            row = list(
                await self._writer.execute_fetchall(
                    "SELECT value FROM meta WHERE name='schema_version'"
                )
            )
            if not row or row[0][0] != SCHEMA_VERSION:
                got = row[0][0] if row else None
                raise StorageError(
                    f"{self.path} has schema version {got}, this plantd supports"
                    f" {SCHEMA_VERSION}; refusing to open it"
                )

    async def _configure_writer(self, existed: bool) -> None:
        w = self._writer
        try:
            mode = await _scalar(w, "PRAGMA journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot enable WAL mode (journal_mode={mode})")
            await w.execute("PRAGMA synchronous=FULL")
            await w.execute("PRAGMA busy_timeout=5000")
            # random writes across a big table touch a leaf page each: keep them in memory
            await w.execute(f"PRAGMA cache_size=-{max(self._cache_bytes // 1024, 1)}")
            tables = list(
                await w.execute_fetchall("SELECT name FROM sqlite_master WHERE type='table'")
            )
            if not tables:
                await w.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        await w.execute(stmt)
                await w.executemany(
                    "INSERT INTO meta(name, value) VALUES(?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("revision", 0), ("compact_revision", 0)],
                )
                await w.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                await w.execute("ROLLBACK")
            raise StorageError(f"cannot initialise state database {self.path}: {e}") from None

    async def _load_meta(self) -> None:
        meta = dict(list(await self._writer.execute_fetchall("SELECT name, value FROM meta")))
        self.revision = int(meta["revision"])
        self.compact_revision = int(meta["compact_revision"])
        rows = await self._writer.execute_fetchall(
            "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM requests)"
        )
        self._history_count, self._request_count = next(iter(rows))
        self._wstate = (
            self.revision,
            self.compact_revision,
            self._history_count,
            self._request_count,
        )
        try:  # batched txn lookups need JSON1 (built in since SQLite 3.38)
            await self._writer.execute_fetchall("SELECT count(*) FROM json_each('[1]')")
        except sqlite3.OperationalError:
            self._json_each = False

    async def close(self) -> None:
        """Finish queued writes, stop the reaper, checkpoint and release the lock."""
        if self._closed:
            return
        self._closed = True
        if self._counter:
            self._counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counter
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._committer:
            self._drains.put_nowait(None)
            await self._committer
        if self._get_task is not None:
            await asyncio.wait([self._get_task])  # answer gets already issued
        try:
            await self._reader.close()
            with contextlib.suppress(sqlite3.Error):
                await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._writer.close()
        finally:
            self._lock.release()

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def queue_depth(self) -> int:
        """Writes waiting for a drain (not yet in a transaction)."""
        return len(self._pending)

    # ------------------------------------------------------------------ change feed

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` after each commit, in commit order (awaited if async).

        Callbacks run on the committer task: keep them fast (e.g. put on a queue).
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    # ------------------------------------------------------------------ writes

    async def create_scope(self, scope: str, *, request_id: str | None = None) -> dict[str, Any]:
        """Create a scope; creating an existing scope is not an error (``created: false``)."""
        op = _CreateScopeOp(_check_scope(scope, self.limits), self._rid(request_id))
        return await self._submit(op)

    async def delete_scope(self, scope: str, *, request_id: str | None = None) -> dict[str, Any]:
        """Delete a scope and all its keys: ONE revision, ONE ``delete-scope`` event."""
        op = _DeleteScopeOp(_check_scope(scope, self.limits), self._rid(request_id))
        return await self._submit(op)

    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        prev_revision: int | None = None,
        if_absent: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Set a JSON value (creating the scope if missing); optional CAS and TTL."""
        kop = self._new_key_op("set", scope, key, prev_revision, if_absent, True, value, ttl, "set")
        return await self._submit(_TxnOp([kop], self._rid(request_id), single=True))

    async def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Delete a key; a missing key raises NotFound; optional CAS on mod_revision."""
        kop = self._new_key_op(
            "delete", scope, key, prev_revision, False, False, None, None, "delete"
        )
        return await self._submit(_TxnOp([kop], self._rid(request_id), single=True))

    async def txn(
        self,
        ops: Iterable[dict[str, Any]],
        *,
        request_id: str | None = None,
        default_scope: str | None = None,
    ) -> dict[str, Any]:
        """Apply set/delete/check ops atomically as ONE revision: all or nothing.

        Each op is ``{"op": "set"|"delete"|"check", "scope", "key", "value"?, "ttl"?,
        "prev_revision"?, "if_absent"?}``; a key may appear once per txn. An op without
        ``scope`` uses ``default_scope``.
        """
        if isinstance(ops, dict | str | bytes) or not isinstance(ops, Iterable):
            raise InvalidArgument("txn ops must be a list of operation objects")
        op_list = list(ops)
        if not op_list:
            raise InvalidArgument("txn needs at least one op")
        if len(op_list) > self.limits.max_txn_ops:
            raise LimitExceeded("max_txn_ops", self.limits.max_txn_ops, len(op_list), "txn")
        kops = []
        seen: set[tuple[str, str]] = set()
        for i, raw in enumerate(op_list):
            kop = self._key_op(raw, f"txn op {i}", default_scope)
            if (kop.scope, kop.key) in seen:
                raise InvalidArgument(f"txn op {i}: duplicate key {kop.scope}/{kop.key}")
            seen.add((kop.scope, kop.key))
            kops.append(kop)
        return await self._submit(_TxnOp(kops, self._rid(request_id), single=False))

    async def import_json(
        self, doc: dict[str, Any], *, replace: bool = False, request_id: str | None = None
    ) -> dict[str, Any]:
        """Load an ``export_json`` document as one revision; ``replace`` drops other scopes."""
        if not isinstance(doc, dict) or not isinstance(doc.get("scopes"), dict):
            raise InvalidArgument("import document must be an object with a 'scopes' object")
        scopes: dict[str, list[tuple[str, str, Any]]] = {}
        for scope, kv in doc["scopes"].items():
            _check_scope(scope, self.limits)
            if not isinstance(kv, dict):
                raise InvalidArgument(f"import: scope {scope!r} must map keys to values")
            scopes[scope] = [
                (_check_key(k, self.limits), _encode_value(v, self.limits, f"{scope}/{k}"), v)
                for k, v in kv.items()
            ]
        return await self._submit(_ImportOp(scopes, replace, self._rid(request_id)))

    def _rid(self, request_id: Any) -> str | None:
        return _check_request_id(request_id, self.limits)

    def _key_op(self, raw: Any, what: str, default_scope: str | None = None) -> _KeyOp:
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{what}: op must be an object, got {type(raw).__name__}")
        kind = raw.get("op")
        if kind not in ("set", "delete", "check"):
            raise InvalidArgument(f"{what}: op must be set, delete or check, got {kind!r}")
        if not _OP_FIELDS.issuperset(raw):
            raise InvalidArgument(f"{what}: unknown fields {sorted(set(raw) - _OP_FIELDS)}")
        return self._new_key_op(
            kind,
            raw.get("scope", default_scope),
            raw.get("key"),
            raw.get("prev_revision"),
            raw.get("if_absent", False),
            "value" in raw,
            raw.get("value"),
            raw.get("ttl"),
            what,
        )

    def _new_key_op(
        self,
        kind: str,
        scope: Any,
        key: Any,
        prev_revision: Any,
        if_absent: Any,
        has_value: bool,
        value: Any,
        ttl: Any,
        what: str,
    ) -> _KeyOp:
        """Validate one set/delete/check (shared by txn ops and the direct set/delete path)."""
        limits = self.limits
        scope = _check_scope(scope, limits)
        key = _check_key(key, limits)
        prev = _check_revision(prev_revision, "prev_revision")
        if not isinstance(if_absent, bool):
            raise InvalidArgument(f"{what}: if_absent must be a boolean")
        if if_absent:
            if prev not in (None, 0):
                raise InvalidArgument(f"{what}: if_absent contradicts prev_revision={prev}")
            prev = 0
        if kind == "set":
            if not has_value:
                raise InvalidArgument(f"{what}: set needs a value")
            text = _encode_value(value, limits, f"{what} {scope}/{key}")
            return _KeyOp(kind, scope, key, text, value, _check_ttl(ttl, limits), prev)
        if ttl is not None or has_value:
            raise InvalidArgument(f"{what}: {kind} takes no value or ttl")
        if kind == "delete" and prev == 0:
            raise InvalidArgument(f"{what}: delete with prev_revision=0 can never succeed")
        if kind == "check" and prev is None:
            raise InvalidArgument(f"{what}: check needs prev_revision or if_absent")
        return _KeyOp(kind, scope, key, prev_revision=prev)

    async def _submit(self, op: _Op) -> dict[str, Any]:
        if self._closed or self._stopping:
            raise StorageError("state store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._outstanding < _DRAINS_AHEAD:
            self._start_drain()
        return await fut

    # ------------------------------------------------------------------ committer
    #
    # Group commit, pull style: a drain job on the writer's thread takes EVERY write waiting
    # at the moment it starts, applies them in one transaction and commits. Two drains are
    # kept queued on that thread, so when one commit ends the next batch starts at once
    # with whatever arrived meanwhile, without a round trip through the event loop. The
    # committer task adopts finished drains in order: publish the changes, then acknowledge.

    def _start_drain(self) -> None:
        self._outstanding += 1
        self._drains.put_nowait(asyncio.ensure_future(_on_db_thread(self._writer, self._drain)))

    def _drain(self, db: sqlite3.Connection) -> _Drained | None:
        """Writer's thread: commit everything queued now as ONE transaction."""
        if self._stopping:
            return None  # the committer is gone: nobody would acknowledge these writes
        batch: list[tuple[_Op, asyncio.Future[Any]]] = []
        pending = self._pending
        while pending and len(batch) < self._batch_max:
            op, fut = pending.popleft()
            if not fut.done():  # a caller cancelled before this point was never acknowledged
                batch.append((op, fut))
        if not batch:
            return None
        try:
            done = self._write_batch([op for op, _ in batch], self._clock(), self._wstate, db)
        except BaseException as e:  # rolled back: every caller of the batch gets the error
            return _Drained(batch, None, e)
        self._wstate = (done.revision, done.compact, done.history, done.requests)
        return _Drained(batch, done, None)

    async def _commit_loop(self) -> None:
        """Adopt drains in commit order; on close, run until nothing is waiting."""
        while True:
            job = await self._drains.get()
            if job is None:  # close(): stop once every queued write is adopted
                if not self._pending and not self._outstanding:
                    return
                # drains started after the sentinel (by an adoption) sit behind it: go
                # round again after them
                if self._pending and self._outstanding < _DRAINS_AHEAD:
                    self._start_drain()
                self._drains.put_nowait(None)
                continue
            try:
                drained = await asyncio.shield(job)
            except asyncio.CancelledError:
                await self._settle_after_cancel(job)
                raise
            self._outstanding -= 1
            if drained is not None:
                await self._finish_batch(drained)
            if self._pending and self._outstanding < _DRAINS_AHEAD:
                self._start_drain()

    async def _settle_after_cancel(self, job: asyncio.Future[_Drained | None]) -> None:
        """The committer is being cancelled: report the real outcome of every write already
        on the writer's thread (nobody is told "not applied" about a committed write) and
        refuse the writes no drain has taken."""
        self._stopping = True
        jobs = [job]
        while not self._drains.empty():
            nxt = self._drains.get_nowait()
            if nxt is not None:
                jobs.append(nxt)
        for j in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([j])
            if j.done() and not j.cancelled() and j.exception() is None:
                drained = j.result()
                if drained is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._finish_batch(drained)
        self._outstanding = 0
        refused = StorageError("state store stopped before the write; nothing was applied")
        while self._pending:
            _op, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(refused)

    async def _finish_batch(self, drained: _Drained) -> None:
        """Adopt a committed batch (publish, then acknowledge) or fail all its callers."""
        batch, e = drained.batch, drained.error
        if e is not None:
            if isinstance(e, sqlite3.Error):
                err = _storage_error("write transaction", e)
            elif isinstance(e, StorageError):
                err = e
            else:
                log.error("state store: unexpected error in a write batch", exc_info=e)
                err = StorageError(f"internal error in write batch: {e!r}; nothing was applied")
            self.last_error = err.message
            for _op, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        done = drained.committed
        assert done is not None
        self.revision = done.revision
        self.compact_revision = done.compact
        self._history_count = done.history
        self._request_count = done.requests
        self.commits += 1
        self.ops_applied += len(batch)
        if done.key_deltas or done.reset_counts:
            self._counts.adopt(done.revision, done.key_deltas, done.reset_counts)
        self.last_error = None
        if self._listeners:
            await self._publish(done.events)
        for (_op, fut), (ok, res) in zip(batch, done.outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(res)
            else:
                fut.set_exception(res)

    def _write_batch(
        self, ops: list[_Op], now: float, start: tuple[int, int, int, int], db: sqlite3.Connection
    ) -> _Committed:
        """Apply ``ops`` in ONE transaction and COMMIT, all on the writer's thread.

        Rolls back and re-raises on any error: the caller then fails the whole batch.
        """
        revision, compact, history, requests = start
        b = _Batch(db, revision, now, self._json_each)
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            outcomes = [self._apply_one(b, op) for op in ops]
            if b.change_rows:
                _write_rows(
                    db,
                    b.json_each,
                    b.change_rows,
                    5,
                    now,
                    _INSERT_CHANGES_SQL,
                    _INSERT_CHANGES_JSON_SQL,
                )
                history, compact = self._prune_history(db, history + len(b.change_rows), compact)
            if b.request_rows:
                db.executemany(
                    "INSERT INTO requests(request_id, fingerprint, result, ts) VALUES(?,?,?,?)",
                    b.request_rows,
                )
                requests += len(b.request_rows)
                if requests > self._request_history:
                    db.execute(
                        "DELETE FROM requests WHERE seq IN"
                        " (SELECT seq FROM requests ORDER BY seq LIMIT ?)",
                        (requests - self._request_history,),
                    )
                    requests = self._request_history
            if b.revision != revision or compact != start[1]:
                db.execute(_UPDATE_META_SQL, (b.revision, compact))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            raise
        return _Committed(
            outcomes,
            b.events,
            b.revision,
            compact,
            history,
            requests,
            b.key_deltas,
            b.reset_counts,
        )

    def _apply_one(self, b: _Batch, op: _Op) -> tuple[bool, Any]:
        rid = op.request_id
        fp = ""
        if rid is not None:
            fp = op.fingerprint()
            hit = b.requests.get(rid)
            if hit is None:
                row = b.db.execute(
                    "SELECT fingerprint, result FROM requests WHERE request_id=?", (rid,)
                ).fetchone()
                hit = (row[0], row[1]) if row else None
            if hit is not None:
                if hit[0] != fp:
                    return False, InvalidArgument(
                        f"request_id {rid!r} was already used for a different request",
                        request_id=rid,
                    )
                doc = jsoncodec.loads(hit[1])
                if "error" in doc:
                    return False, StateError.from_dict(doc["error"])
                return True, doc["result"]
        try:
            res: tuple[bool, Any] = (True, op.apply(b))
        except StorageError:
            raise
        except StateError as e:
            res = (False, e)
        if rid is not None:
            ok, val = res
            text = json.dumps({"result": val} if ok else {"error": val.to_dict()})
            b.requests[rid] = (fp, text)
            b.request_rows.append((rid, fp, text, b.now))
        return res

    def _prune_history(self, db: sqlite3.Connection, count: int, compact: int) -> tuple[int, int]:
        """Drop whole oldest revisions so at most ``history_size`` events remain."""
        if count <= self._history_size:
            return count, compact
        cut = db.execute(
            "SELECT revision FROM changes ORDER BY revision, idx LIMIT 1 OFFSET ?",
            (count - self._history_size - 1,),
        ).fetchone()[0]
        deleted = db.execute("DELETE FROM changes WHERE revision <= ?", (cut,)).rowcount
        return count - deleted, max(compact, cut)

    async def _publish(self, events: list[Event]) -> None:
        listeners = list(self._listeners)
        for event in events:
            for cb in listeners:
                try:
                    r = cb(dict(event))
                    if r is not None and inspect.isawaitable(r):
                        await r
                except Exception:
                    log.exception("state store: change listener %r failed", cb)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                await self.reap_expired()
            except StateError as e:
                log.warning("state store: TTL reaper failed: %s", e)

    async def reap_expired(self) -> int:
        """Commit deletes for expired keys now (the reaper calls this every ``reap_interval``)."""
        total = 0
        while True:
            rows = await self._read("SELECT min(expires) FROM kv WHERE expires IS NOT NULL")
            first = rows[0][0]
            if first is None or first > self._clock():
                return total
            n = (await self._submit(_ReapOp(self._reap_batch)))["expired"]
            total += n
            if n < self._reap_batch:
                return total
            await asyncio.sleep(0)  # bounded work per pass: let other writers in

    # ------------------------------------------------------------------ reads

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        # single-statement reads need no lock: the reader's calls run in FIFO order on its
        # thread, and multi-statement reads are ONE hand-off each (see _read_txn)
        try:
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as e:
            raise _storage_error("read", e) from None

    async def _read_txn(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one read transaction (= one snapshot) as ONE hand-off."""

        def run(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN")
            try:
                return fn(db)
            finally:
                db.execute("COMMIT")

        try:
            return await _on_db_thread(self._reader, run)
        except sqlite3.Error as e:
            raise _storage_error(action, e) from None

    async def get(self, scope: str, key: str) -> dict[str, Any]:
        """Return value and metadata of a live key; missing scope or key raises NotFound."""
        _check_scope(scope, self.limits)
        _check_key(key, self.limits)
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self._gets.append((scope, key, self._clock(), fut))
        if self._get_task is None:
            self._get_task = asyncio.create_task(self._serve_gets(), name="state-reads")
        exists, text, crev, mrev, ver, updated, expires, header = await fut
        if not exists:
            raise NotFound(f"scope {scope!r} not found", scope=scope, key=key)
        if text is None:
            raise NotFound(f"key {key!r} not found in scope {scope!r}", scope=scope, key=key)
        return {
            "scope": scope,
            "key": key,
            "value": jsoncodec.loads(text),
            "create_revision": crev,
            "mod_revision": mrev,
            "version": ver,
            "updated": updated,
            "expires": expires,
            "revision": header,
        }

    async def _serve_gets(self) -> None:
        """Answer all pending gets in ONE hand-off per round (group read, like group commit).

        Each get was issued after the writes it must see were acknowledged (= committed),
        and its row is read after that, so read-your-writes holds; expiry uses each get's
        own call time.
        """
        try:
            while self._gets:
                batch, self._gets = self._gets, []
                batch = [g for g in batch if not g[3].done()]
                if not batch:
                    continue
                args = [(scope, key, now) for scope, key, now, _ in batch]
                try:
                    rows = await _on_db_thread(self._reader, functools.partial(_get_rows, args))
                except Exception as e:  # e.g. ValueError from a closed connection
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (*_, fut), row in zip(batch, rows, strict=True):
                    if fut.done():
                        continue
                    if isinstance(row, sqlite3.Error):
                        fut.set_exception(_storage_error("read", row))
                    else:
                        fut.set_result(row)
        finally:
            self._get_task = None
            pending, self._gets = self._gets, []
            for *_, fut in pending:
                if not fut.done():
                    fut.set_exception(StorageError("state store stopped before the read"))

    async def list_scopes(self) -> list[dict[str, Any]]:
        """All scopes, sorted: ``[{scope, create_revision, keys}]`` (``[]`` when none)."""
        rows = await self._read(
            "SELECT s.name, s.create_revision, count(k.key) FROM scopes s"
            " LEFT JOIN kv k ON k.scope=s.name AND (k.expires IS NULL OR k.expires > ?)"
            " GROUP BY s.name ORDER BY s.name",
            (self._clock(),),
        )
        return [{"scope": n, "create_revision": c, "keys": k} for n, c, k in rows]

    async def list_keys(
        self, scope: str, *, prefix: str = "", include_values: bool = False
    ) -> list[dict[str, Any]]:
        """Live keys of a scope sorted by key with metadata (``[]`` if empty; NotFound if no
        such scope). Values only with ``include_values`` to keep listings small."""
        _check_scope(scope, self.limits)
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix must be a string")
        rows = await self._read(
            "SELECT k.key, k.value, k.create_revision, k.mod_revision, k.version, k.updated,"
            " k.expires FROM (SELECT 1) LEFT JOIN kv k ON k.scope=?1 AND k.key >= ?2"
            " AND substr(k.key, 1, length(?2)) = ?2 AND (k.expires IS NULL OR k.expires > ?3)"
            " WHERE EXISTS(SELECT 1 FROM scopes WHERE name=?1) ORDER BY k.key",
            (scope, prefix, self._clock()),
        )
        if not rows:
            raise NotFound(f"scope {scope!r} not found", scope=scope)
        out = []
        for key, text, crev, mrev, ver, updated, expires in rows:
            if key is None:
                continue
            item = {
                "key": key,
                "create_revision": crev,
                "mod_revision": mrev,
                "version": ver,
                "updated": updated,
                "expires": expires,
            }
            if include_values:
                item["value"] = jsoncodec.loads(text)
            out.append(item)
        return out

    # ------------------------------------------------------------------ paged reads

    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str | None = None,
        after: str | None = None,
        limit: int = 1000,
        include_values: bool = True,
        max_bytes: int = 768 * 1024,
    ) -> dict[str, Any]:
        """One page of a scope's live keys after ``after`` (see plantd.state.pages):
        ``{keys, more, next, revision, total}``; NotFound if no such scope.

        ``total``: keys matching ``prefix`` (a range count) or, without a prefix, the
        scope's kept key count (plantd.state.counts); ``None`` with a ``glob``.
        """
        _check_scope(scope, self.limits)
        whole = not prefix and glob is None
        if whole and self._counts.get(scope) is None:
            await self._counted()
        now = self._clock()
        logs = self._counts.begin([scope]) if whole and self._counts.get(scope) is None else {}

        def read(db: sqlite3.Connection) -> tuple[int, Any, bool, int | None]:
            rev = pages.revision(db)
            if not pages.scope_exists(db, scope):
                return rev, None, False, None
            items, more = pages.keys_page(
                db,
                scope,
                prefix=prefix,
                glob=glob,
                after=after,
                limit=limit,
                include_values=include_values,
                max_bytes=max_bytes,
                now=now,
            )
            total: int | None = None
            if prefix and glob is None:
                total = pages.count_live_prefix(db, scope, prefix, now)
            elif logs:
                total = pages.count_rows(db, [scope]).get(scope, 0)
            return rev, items, more, total

        try:
            rev, items, more, total = await self._read_txn("read", read)
        except BaseException:
            self._counts.abandon(logs)
            raise
        if items is None:
            self._counts.abandon(logs)
            raise NotFound(f"scope {scope!r} not found", scope=scope)
        if logs:
            total = self._counts.install(logs, rev, {scope: total or 0})[scope]
        elif whole:
            total = self._counts.get(scope)
        return {
            "keys": items,
            "more": more,
            "next": items[-1]["key"] if more else None,
            "revision": rev,
            "total": total,
        }

    async def _count_all(self) -> None:
        """Count every scope's keys once, in the background after open, on a private
        read-only connection (start-up does not wait, reads are not held up): the first
        listing of a big scope then finds its total ready (see plantd.state.counts)."""
        try:
            conn = await aiosqlite.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        except sqlite3.Error as e:
            log.warning("state store: background key count not started: %s", e)
            return
        try:
            names = [r[0] for r in await conn.execute_fetchall("SELECT name FROM scopes")]
            logs = self._counts.begin(names)

            def read(db: sqlite3.Connection) -> tuple[int, dict[str, int]]:
                db.execute("BEGIN")
                try:
                    rows = db.execute("SELECT scope, count(*) FROM kv GROUP BY scope")
                    return pages.revision(db), dict(rows.fetchall())
                finally:
                    db.execute("COMMIT")

            try:
                rev, counted = await _on_db_thread(conn, read)
            except BaseException:
                self._counts.abandon(logs)
                raise
            self._counts.install(logs, rev, counted)
        except sqlite3.Error as e:
            log.warning("state store: background key count failed: %s", e)
        finally:
            await conn.close()

    async def _counted(self) -> None:
        """Wait for the background count if it still runs (one pass, not two)."""
        task = self._counter
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def scope_exists(self, scope: str) -> bool:
        rows = await self._read("SELECT 1 FROM scopes WHERE name=?", (scope,))
        return bool(rows)

    async def key_counts(self, scopes: list[str]) -> dict[str, int]:
        """Kept key counts of ``scopes``; the ones not known yet are counted once."""
        if any(self._counts.get(s) is None for s in scopes):
            await self._counted()
        missing = [s for s in scopes if self._counts.get(s) is None]
        if missing:
            logs = self._counts.begin(missing)
            try:
                rev, counted = await self._read_txn(
                    "read", lambda db: (pages.revision(db), pages.count_rows(db, missing))
                )
            except BaseException:
                self._counts.abandon(logs)
                raise
            self._counts.install(logs, rev, counted)
        return {s: self._counts.get(s) or 0 for s in scopes}

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of scope names: ``{details: [{scope, create_revision, keys}], more,
        next, total, revision}`` (``total`` = scopes matching ``prefix``)."""

        def read(db: sqlite3.Connection) -> tuple[int, list[tuple[str, int]], bool, int]:
            return pages.revision(db), *pages.scopes_page(
                db, prefix=prefix, after=after, limit=limit
            )

        rev, rows, more, total = await self._read_txn("read", read)
        counts = await self.key_counts([name for name, _ in rows])
        details = [{"scope": n, "create_revision": c, "keys": counts[n]} for n, c in rows]
        return {
            "details": details,
            "more": more,
            "next": rows[-1][0] if more else None,
            "total": total,
            "revision": rev,
        }

    async def export_page(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> dict[str, Any]:
        """One page of an export at its own revision (see :meth:`export_pages` for a
        consistent multi-page export)."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> tuple[int, Any]:
            page = pages.export_page(db, after=after, limit=limit, max_bytes=max_bytes, now=now)
            return pages.revision(db), page

        rev, page = await self._read_txn("export", read)
        return _export_doc(rev, *page)

    async def export_pages(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of an export from ONE snapshot (a private read-only connection holds
        one read transaction until the last page): a consistent export at one revision."""
        try:
            conn = await aiosqlite.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        except sqlite3.Error as e:
            raise _storage_error("export", e) from None
        now = self._clock()
        try:
            await conn.execute("BEGIN")
            rev = await _on_db_thread(conn, pages.revision)  # pins the snapshot
            cursor = after
            while True:
                page = await _on_db_thread(
                    conn,
                    functools.partial(
                        pages.export_page, after=cursor, limit=limit, max_bytes=max_bytes, now=now
                    ),
                )
                cursor = page[2]
                yield _export_doc(rev, *page)
                if cursor is None:
                    return
        except sqlite3.Error as e:
            raise _storage_error("export", e) from None
        finally:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await conn.execute("COMMIT")
            await conn.close()

    async def changes_since(self, revision: int, *, limit: int | None = None) -> list[Event]:
        """Committed events with revision > ``revision`` in commit order.

        Raises Compacted (with ``oldest_revision``) if events after ``revision`` were pruned.
        With ``limit``, stops after the revision holding the limit-th event (never splits a
        revision, so resuming from the last event's revision loses nothing).
        """
        if _check_revision(revision, "revision") is None:
            raise InvalidArgument("revision is required")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidArgument(f"limit must be an integer >= 1, got {limit!r}")

        def read(db: sqlite3.Connection) -> tuple[int, list[Any] | None]:
            compact = db.execute("SELECT value FROM meta WHERE name='compact_revision'")
            compact = compact.fetchone()[0]
            if revision < compact:
                return compact, None
            upper = None
            if limit is not None:
                last = db.execute(
                    "SELECT revision FROM changes WHERE revision > ?"
                    " ORDER BY revision, idx LIMIT 1 OFFSET ?",
                    (revision, limit - 1),
                ).fetchone()
                upper = last[0] if last else None
            rows = db.execute(
                "SELECT revision, op, scope, key, value, ts FROM changes"
                " WHERE revision > ?1 AND (?2 IS NULL OR revision <= ?2)"
                " ORDER BY revision, idx",
                (revision, upper),
            ).fetchall()
            return compact, rows

        # one snapshot: compaction cannot race the select
        compact, rows = await self._read_txn("read", read)
        if rows is None:
            raise Compacted(
                f"revision {revision} is compacted: history starts after"
                f" revision {compact}; resync with a full read",
                compact_revision=compact,
            )
        return [
            {
                "scope": scope,
                "key": key,
                "op": op,
                "value": jsoncodec.loads(text) if text is not None else None,
                "revision": rev,
                "ts": ts,
            }
            for rev, op, scope, key, text, ts in rows
        ]

    async def export_json(self) -> dict[str, Any]:
        """All scopes, keys and values at one revision (TTLs and history are not exported)."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> tuple[int, list[str], list[Any]]:
            rev = db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
            scopes = [row[0] for row in db.execute("SELECT name FROM scopes ORDER BY name")]
            rows = db.execute(
                "SELECT scope, key, value FROM kv"
                " WHERE expires IS NULL OR expires > ? ORDER BY scope, key",
                (now,),
            ).fetchall()
            return rev, scopes, rows

        rev, scopes, rows = await self._read_txn("export", read)
        out: dict[str, dict[str, Any]] = {s: {} for s in scopes}
        for scope, key, text in rows:
            out.setdefault(scope, {})[key] = jsoncodec.loads(text)
        return {"format": "plantd-state", "version": 1, "revision": rev, "scopes": out}

    async def health(self) -> dict[str, Any]:
        """Liveness and storage facts for the health operation and the metrics endpoint."""
        status = "pass" if self.last_error is None else "warn"
        try:
            rows = await self._read(
                "SELECT (SELECT count(*) FROM scopes), (SELECT count(*) FROM kv),"
                " (SELECT value FROM meta WHERE name='revision')"
            )
            scopes, keys, revision = rows[0]
        except StorageError as e:
            status, scopes, keys, revision = "fail", None, None, self.revision
            self.last_error = e.message
        try:
            size = self.path.stat().st_size
            wal = self.path.with_name(self.path.name + "-wal")
            wal_size = wal.stat().st_size if wal.exists() else 0
        except OSError:
            size = wal_size = None
        return {
            "status": status,
            "sqlite_version": sqlite3.sqlite_version,
            "path": str(self.path),
            "journal_mode": "wal",
            "synchronous": "full",
            "revision": revision,
            "compact_revision": self.compact_revision,
            "oldest_revision": self.compact_revision + 1,
            "scopes": scopes,
            "keys": keys,
            "history_events": self._history_count,
            "commits": self.commits,
            "ops_applied": self.ops_applied,
            "queue_depth": self.queue_depth,
            "db_bytes": size,
            "wal_bytes": wal_size,
            "limits": asdict(self.limits),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ backup / restore

    async def backup(self, dest: str | os.PathLike[str], *, overwrite: bool = False) -> dict:
        """Online backup to ``dest`` while writes go on (consistent snapshot, one file).

        Copies through a temporary read-only connection (no second writer on our database),
        checks the copy and atomically renames it into place.
        """
        dest = Path(dest)
        if dest.resolve() == self.path.resolve():
            raise InvalidArgument("backup destination is the live database")
        if dest.exists() and not overwrite:
            raise InvalidArgument(f"backup destination {dest} exists (pass overwrite=True)")
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        src = dst = None
        try:
            src = await aiosqlite.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            dst = await aiosqlite.connect(tmp, isolation_level=None, check_same_thread=False)
            await src.backup(dst)  # whole DB in one step = one read snapshot
            await dst.execute("PRAGMA journal_mode=DELETE")  # self-contained single file
            check = [r[0] for r in await dst.execute_fetchall("PRAGMA integrity_check(5)")]
            if check != ["ok"]:
                raise StorageError(f"backup copy failed integrity_check: {check}")
            rev = await _scalar(dst, "SELECT value FROM meta WHERE name='revision'")
            await dst.close()
            dst = None
            _fsync_file(tmp)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        except sqlite3.Error as e:
            raise _storage_error(f"backup to {dest}", e) from None
        except OSError as e:
            raise StorageError(f"backup to {dest} failed: {e}") from None
        finally:
            for conn in (dst, src):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            tmp.unlink(missing_ok=True)
        return {"path": str(dest), "revision": rev, "bytes": dest.stat().st_size}

    @classmethod
    def restore(cls, backup: str | os.PathLike[str], path: str | os.PathLike[str]) -> dict:
        """Replace the database at ``path`` with a validated backup (OFFLINE: daemon stopped).

        Refuses while a store holds the lock. The previous files are kept, renamed to
        ``<db>.pre-restore-<timestamp>`` (+ ``-wal``/``-shm``), never deleted.
        """
        backup, path = Path(backup), Path(path)
        lock = _FileLock(path.with_name(path.name + ".lock"))
        lock.acquire(path)
        try:
            if not backup.is_file():
                raise InvalidArgument(f"backup {backup} does not exist")
            _precheck_file(backup)
            tmp = path.with_name(path.name + ".restore-tmp")
            tmp.unlink(missing_ok=True)
            try:
                src = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
                try:
                    check = [r[0] for r in src.execute("PRAGMA integrity_check(5)")]
                    if check != ["ok"]:
                        raise CorruptDatabase(f"backup {backup} failed integrity_check: {check}")
                    tables = {
                        r[0]
                        for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
                    }
                    if not _TABLES <= tables:
                        raise CorruptDatabase(f"{backup} is not a plantd state backup")
                    meta = dict(src.execute("SELECT name, value FROM meta").fetchall())
                    if meta.get("schema_version") != SCHEMA_VERSION:
                        raise StorageError(
                            f"backup schema version {meta.get('schema_version')} unsupported"
                        )
                    dst = sqlite3.connect(tmp)
                    try:
                        src.backup(dst)
                    finally:
                        dst.close()
                finally:
                    src.close()
            except sqlite3.Error as e:
                tmp.unlink(missing_ok=True)
                raise CorruptDatabase(f"backup {backup} is unreadable: {e}") from None
            _fsync_file(tmp)
            previous = None
            if path.exists():
                stamp = time.strftime("%Y%m%dT%H%M%S")
                previous = path.with_name(f"{path.name}.pre-restore-{stamp}")
                for suffix in ("-wal", "-shm", ""):
                    old = path.with_name(path.name + suffix)
                    if old.exists():
                        os.replace(old, previous.with_name(previous.name + suffix))
            else:
                for suffix in ("-wal", "-shm"):  # stale side files would corrupt the new DB
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            lock.release()
        return {
            "path": str(path),
            "revision": int(meta["revision"]),
            "previous": str(previous) if previous else None,
        }
