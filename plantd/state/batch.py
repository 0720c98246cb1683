"""The write path as ONE synchronous function: :func:`apply_batch` applies queued
operations to a plain ``sqlite3`` connection in one transaction and commits.

No asyncio and no database thread here: the group committer runs it on the writer's thread, and
tests run it on ``sqlite3.connect(":memory:")``. Operations validate (read) before they
write, so a failing compare never fails the other operations of the batch; an SQLite error
rolls the whole batch back and is raised to the caller.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from plantd.identity.audit import GENESIS, Entry, chain, insert_rows
from plantd.protocol import jsoncodec
from plantd.state import history, requestlog
from plantd.state.counts import Delta
from plantd.state.history import Event

if TYPE_CHECKING:
    from plantd.state.audit import AuditContext
    from plantd.state.ops import KeyOp

LOOKUP_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
    " k.create_revision, k.mod_revision, k.version, k.expires, {value}"
    " FROM (SELECT 1) LEFT JOIN kv k ON k.scope=?1 AND k.key=?2"
)
"""A key's state; ``{value}`` is ``k.value`` when the write is audited (its old value comes
from the row the write looks up anyway, not from a read before the write), else ``NULL``."""
UPSERT_SQL = (
    "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
    " expires) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(scope, key) DO UPDATE SET"
    " value=excluded.value, create_revision=excluded.create_revision,"
    " mod_revision=excluded.mod_revision, version=excluded.version,"
    " updated=excluded.updated, expires=excluded.expires"
)
UPSERT_JSON_SQL = (
    "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
    " expires) SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),"
    " json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),"
    " json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), ?2, NULL"
    " FROM json_each(?1) j WHERE true ON CONFLICT(scope, key) DO UPDATE SET"
    " value=excluded.value, create_revision=excluded.create_revision,"
    " mod_revision=excluded.mod_revision, version=excluded.version,"
    " updated=excluded.updated, expires=excluded.expires"
)
"""UPSERT_SQL for many rows without TTL as ONE statement; ``updated`` is bound, not sent
through JSON, so every float is stored bit for bit."""
DELETE_KEY_SQL = "DELETE FROM kv WHERE scope=? AND key=?"
LOOKUP_MANY_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
    " (SELECT json_group_array(json_array(j.key, k.create_revision, k.mod_revision,"
    " k.version, k.expires IS NOT NULL AND k.expires <= ?3, {value}))"
    " FROM json_each(?2) j LEFT JOIN kv k ON k.scope=?1 AND k.key=j.value)"
)
_LOOKUP = {False: LOOKUP_SQL.format(value="NULL"), True: LOOKUP_SQL.format(value="k.value")}
_LOOKUP_MANY = {
    False: LOOKUP_MANY_SQL.format(value="NULL"),
    True: LOOKUP_MANY_SQL.format(value="k.value"),
}
"""States of many keys of one scope as ONE row: every row a cursor yields is one more
sqlite3_step, i.e. one more release and re-take of the GIL (a 100-key txn took 101). Items are
``[index, create, mod, version, expired]``; expiry is decided in SQL against the bound
``now``, so no float goes through JSON."""
ROWS_VIA_JSON_MAX = 256 * 1024
"""Rows carrying up to this much value text in total are written by ONE statement from ONE
JSON parameter: SQLite expands them with the GIL released, where ``executemany`` binds and
steps row by row holding it between rows (the writer's thread then competes with the event
loop for every row). Bigger batches go row by row: each json_extract re-reads its row."""


def write_rows(
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
    elif json_each and sum(len(r[text_at] or "") for r in rows) <= ROWS_VIA_JSON_MAX:
        db.execute(json_sql, (jsoncodec.dumps(rows).decode(), now))
    else:
        db.executemany(many_sql, rows)


UPDATE_META_SQL = (
    "UPDATE meta SET value = CASE name WHEN 'revision' THEN ?1 ELSE ?2 END"
    " WHERE name IN ('revision', 'compact_revision')"
)


@dataclass
class KeyState:
    """A key as a write sees it before changing it (its scope, live row, expiry)."""

    scope_exists: bool
    row: tuple[int, int, int] | None  # (create_revision, mod_revision, version) if live
    expired: bool  # a row exists but its TTL passed (treated as absent)
    text: str | None = None  # the live value's JSON text, when looked up with values

    @property
    def old_value(self) -> Any:
        """The live value before the write (None when absent or not looked up)."""
        return jsoncodec.loads(self.text) if self.text is not None and self.row else None

    @property
    def mod_revision(self) -> int:
        return self.row[1] if self.row else 0


ABSENT = KeyState(False, None, False)


class Op:
    """A write queued for the committer. ``apply`` must raise StateError only before writing.

    ``apply`` runs on the writer's thread inside the batch transaction. An op with
    ``audit`` (who asked) adds its audit entries to the batch (:meth:`Batch.audit`): they
    are chained and inserted in the same transaction as the write.
    """

    request_id: str | None = None
    audit: AuditContext | None = None

    def fingerprint(self) -> str:
        raise NotImplementedError

    def apply(self, b: Batch) -> dict[str, Any]:
        raise NotImplementedError


class Batch:
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
        self.audit_entries: list[Entry] = []
        self.audit_anchor: tuple[int, str] | None = None  # moved by a prune in this batch
        self.audit_last = 0  # the chain's last seq before this batch

    def audit(self, entry: Entry) -> None:
        """Record ``entry`` in the audit chain of this transaction."""
        self.audit_entries.append(entry)

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

    def lookup(self, scope: str, key: str, values: bool = False) -> KeyState:
        """A key's state (with its value text when ``values``)."""
        exists, crev, mrev, ver, expires, text = self.db.execute(
            _LOOKUP[values], (scope, key)
        ).fetchone()
        return self._state(bool(exists), crev, mrev, ver, expires, text)

    def lookup_many(self, ops: Sequence[KeyOp], values: bool = False) -> list[KeyState]:
        """States of a txn's keys: one fixed statement per scope instead of one per key."""
        if len(ops) == 1 or not self.json_each:
            return [self.lookup(o.scope, o.key, values) for o in ops]
        by_scope: dict[str, list[int]] = {}
        for i, o in enumerate(ops):
            by_scope.setdefault(o.scope, []).append(i)
        states: list[KeyState] = [ABSENT] * len(ops)
        for scope, idxs in by_scope.items():
            # raw UTF-8 (orjson never writes surrogate-pair escapes for SQLite to decode)
            keys = jsoncodec.dumps([ops[i].key for i in idxs]).decode()
            found, rows = self.db.execute(_LOOKUP_MANY[values], (scope, keys, self.now)).fetchone()
            exists = bool(found)
            for j, crev, mrev, ver, expired, text in jsoncodec.loads(rows):
                if crev is None:
                    states[idxs[j]] = KeyState(exists, None, False)
                else:
                    live = None if expired else (crev, mrev, ver)
                    states[idxs[j]] = KeyState(exists, live, bool(expired), text)
        return states

    def _state(
        self, exists: bool, crev: Any, mrev: Any, ver: Any, expires: Any, text: Any
    ) -> KeyState:
        if crev is None:
            return KeyState(exists, None, False)
        if expires is not None and expires <= self.now:
            return KeyState(exists, None, True)
        return KeyState(exists, (crev, mrev, ver), False, text)

    def expire(self, scope: str, key: str) -> None:
        """Delete a key whose TTL passed: a change with its own revision, like any delete."""
        self.db.execute(DELETE_KEY_SQL, (scope, key))
        self.count(scope, -1)
        self.emit(self.begin_change(), "delete", scope, key, None, None)

    def create_scope(self, rev: int, scope: str) -> None:
        self.db.execute(
            "INSERT INTO scopes(name, create_revision, created) VALUES(?,?,?)",
            (scope, rev, self.now),
        )
        self.emit(rev, "create-scope", scope, None, None, None)


class WriterState(NamedTuple):
    """The writer's counters as of the last commit (the next batch starts from them)."""

    revision: int = 0
    compact: int = 0
    history: int = 0
    requests: int = 0
    #: the audit chain's end (seq, hash) and anchor: rows of a batch are chained before
    #: COMMIT, in memory, since this writer is the chain's only one
    audit: tuple[int, str] = (0, GENESIS)
    audit_anchor: tuple[int, str] = (0, GENESIS)


@dataclass(frozen=True)
class HistoryLimits:
    """How much history and how many request ids a commit keeps."""

    history_size: int = 10_000
    request_history: int = 10_000


@dataclass
class Committed:
    """What a committed batch hands back to the event loop."""

    outcomes: list[tuple[bool, Any]]
    events: list[Event]
    revision: int
    compact: int
    history: int
    requests: int
    key_deltas: dict[str, Delta]
    reset_counts: bool
    audit_rows: list[dict[str, Any]]
    audit: tuple[int, str]
    audit_anchor: tuple[int, str]

    @property
    def writer_state(self) -> WriterState:
        """Where the next batch starts."""
        return WriterState(
            self.revision,
            self.compact,
            self.history,
            self.requests,
            self.audit,
            self.audit_anchor,
        )


def apply_batch(
    db: sqlite3.Connection,
    ops: Sequence[Op],
    now: float,
    start: WriterState,
    *,
    json_each: bool = True,
    keep: HistoryLimits = HistoryLimits(),
) -> Committed:
    """Apply ``ops`` in ONE transaction and COMMIT (``synchronous=FULL`` makes it durable).

    Each op gets an outcome ``(True, result)`` or ``(False, StateError)``; an SQLite error
    rolls back and is raised: the caller then fails the whole batch.
    """
    revision, compact, count, requests, audit, anchor = start
    b = Batch(db, revision, now, json_each)
    b.audit_last = audit[0]
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        outcomes = [requestlog.apply_once(b, op) for op in ops]
        if b.change_rows:
            write_rows(
                db,
                b.json_each,
                b.change_rows,
                5,
                now,
                history.INSERT_CHANGES_SQL,
                history.INSERT_CHANGES_JSON_SQL,
            )
            count, compact = history.prune_history(
                db, count + len(b.change_rows), compact, keep.history_size
            )
        if b.request_rows:
            requests = requestlog.record(db, b.request_rows, requests, keep.request_history)
        audit_rows = chain(b.audit_entries, now, *audit) if b.audit_entries else []
        if audit_rows:
            insert_rows(db, audit_rows)
            audit = (audit_rows[-1]["seq"], audit_rows[-1]["hash"])
        if b.revision != revision or compact != start.compact:
            db.execute(UPDATE_META_SQL, (b.revision, compact))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            if db.in_transaction:
                db.execute("ROLLBACK")
        raise
    return Committed(
        outcomes,
        b.events,
        b.revision,
        compact,
        count,
        requests,
        b.key_deltas,
        b.reset_counts,
        audit_rows,
        audit,
        b.audit_anchor or anchor,
    )
