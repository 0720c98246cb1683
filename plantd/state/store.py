"""Durable scoped key-value store of the state service: the facade over its parts.

Design (see ``docs/state.md``):

* exactly one writer connection (SQLite 3.40 has the WAL-reset bug with two writers) owned by
  the group committer (plantd.state.committer): everything queued is applied in ONE
  transaction (plantd.state.batch), COMMITted with ``synchronous=FULL`` and only then
  acknowledged, so an acknowledged write is durable;
* operations (plantd.state.ops) validate (read) before they write, so a failing compare or a
  missing key never touches the database and never fails the other operations of the batch;
  an SQLite error rolls the whole batch back and every caller of that batch gets
  ``StorageError``;
* reads go through a separate read-only connection (WAL readers never block the writer) and
  see committed data only;
* revisions follow etcd: one global revision, +1 per committed change; a txn is one change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from plantd.identity.audit import Head, read_head_of
from plantd.protocol import jsoncodec
from plantd.state import backup as backups
from plantd.state import dbthread, pages, reads, ttl
from plantd.state.batch import Committed, HistoryLimits, Op, WriterState, apply_batch
from plantd.state.committer import GroupCommitter
from plantd.state.counts import KeyCounts
from plantd.state.errors import (
    Compacted,
    InvalidArgument,
    NotFound,
    StorageError,
    storage_error,
)
from plantd.state.files import FileLock, precheck_file, side_file
from plantd.state.history import ChangeFeed, Event, Listener, changes_after
from plantd.state.listings import Listings
from plantd.state.ops import CreateScopeOp, DeleteScopeOp, ImportOp, TxnOp
from plantd.state.schema import (
    AUDIT_META,
    Integrity,
    check_database,
    create_schema,
    ensure_audit_tables,
)
from plantd.state.validation import (
    Limits,
    check_key,
    check_limit,
    check_request_id,
    check_revision,
    check_scope,
    import_scopes,
    new_key_op,
    txn_ops,
)
from plantd.storage.sqlite import SqliteThread

if TYPE_CHECKING:
    from plantd.state.audit import AuditContext

__all__ = ["Event", "Limits", "Listener", "StateStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_REFUSE_OPEN = "refusing to open it, the file was not modified (restore a backup)"

AuditListener = Callable[[list[dict[str, Any]], Head], None]


class StateStore:
    """Async scoped key-value store; create with ``await StateStore.open(path)``.

    A write given ``audit`` (who asks) leaves its audit rows in the same transaction
    (plantd.state.audit); ``audit_listener(rows, head)`` is told after each such commit."""

    #: audit rows of a write are committed with it (the etcd store cannot: its service
    #: records them in the keyring's audit file after the write)
    audits_in_transaction = True

    def __init__(
        self,
        path: Path,
        limits: Limits,
        *,
        history_size: int,
        request_history: int,
        batch_max: int,
        reap_interval: float,
        reap_batch: int,
        clock: Callable[[], float],
        verify_max_bytes: int,
        cache_bytes: int,
    ) -> None:  # use open()
        self.path = path
        self._read_uri = dbthread.read_only_uri(path)
        self.limits = limits
        self._keep = HistoryLimits(history_size, request_history)
        self._batch_max = batch_max
        self._reap_interval = reap_interval
        self._reap_batch = reap_batch
        self._clock = clock
        self._verify_max_bytes = verify_max_bytes
        self._cache_bytes = cache_bytes
        self._writer: SqliteThread
        self._reader: SqliteThread
        self._lock = FileLock(side_file(path, ".lock"))
        self._gets: reads.GroupedGets
        self._commits: GroupCommitter
        self._feed = ChangeFeed()
        self._committer: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
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
        self.audit_head = Head.empty()
        self.audit_listener: AuditListener | None = None
        self._counts = KeyCounts()
        self._listings = Listings(
            self._read,
            self._read_txn,
            counts=self._counts,
            limits=limits,
            clock=clock,
            read_uri=self._read_uri,
        )

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
        self = cls(
            Path(path),
            limits or Limits(),
            history_size=history_size,
            request_history=request_history,
            batch_max=batch_max,
            reap_interval=reap_interval,
            reap_batch=reap_batch,
            clock=clock,
            verify_max_bytes=verify_max_bytes,
            cache_bytes=cache_bytes,
        )
        if not self.path.parent.is_dir():
            raise StorageError(f"cannot open state database {self.path}: no such directory")
        self._lock.acquire(self.path)
        try:
            await self._open_connections()
        except BaseException:
            self._lock.release()
            raise
        self._gets = reads.GroupedGets(self._reader)
        self._commits = GroupCommitter(
            self._writer,
            # looked up per batch, so a test can wrap the store's _write_batch
            lambda ops, now, start, db: self._write_batch(ops, now, start, db),
            adopt=self._adopt,
            failed=self._failed,
            clock=self._clock,
            batch_max=self._batch_max,
            start=WriterState(
                self.revision,
                self.compact_revision,
                self._history_count,
                self._request_count,
                (self.audit_head.seq, self.audit_head.hash),
                (self.audit_head.anchor_seq, self.audit_head.anchor_hash),
            ),
        )
        self._committer = asyncio.create_task(self._commits.run(), name="state-committer")
        self._reaper = asyncio.create_task(
            ttl.run_reaper(self._reap_interval, self.reap_expired), name="state-reaper"
        )
        self._listings.start_counting()
        return self

    async def _open_connections(self) -> None:
        existed = precheck_file(self.path)
        try:
            self._writer = await dbthread.writer(self.path)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open state database {self.path}: {e}") from None
        try:
            if existed:
                await self._verify()
            await self._configure_writer()
            self._reader = await dbthread.read_only(self._read_uri)
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
        small = self.path.stat().st_size <= self._verify_max_bytes
        integrity = Integrity.QUICK if small else Integrity.PROBE

        def check(db: sqlite3.Connection) -> None:
            check_database(
                db, str(self.path), integrity=integrity, refusal=_REFUSE_OPEN, allow_empty=True
            )

        await dbthread.on_db_thread(self._writer, check)

    async def _configure_writer(self) -> None:
        w = self._writer
        try:
            rows = list(await w.execute_fetchall("PRAGMA journal_mode=WAL"))
            mode = rows[0][0]
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
                await dbthread.on_db_thread(w, create_schema)
            else:  # a file from before the audit moved into it
                await dbthread.on_db_thread(w, ensure_audit_tables)
        except sqlite3.Error as e:
            raise StorageError(f"cannot initialise state database {self.path}: {e}") from None

    async def _load_meta(self) -> None:
        meta = {
            str(n): int(v)
            for n, v in await self._writer.execute_fetchall("SELECT name, value FROM meta")
        }
        self.revision = meta["revision"]
        self.compact_revision = meta["compact_revision"]
        rows = await self._writer.execute_fetchall(
            "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM requests)"
        )
        self._history_count, self._request_count = next(iter(rows))
        self.audit_head = await dbthread.on_db_thread(
            self._writer, lambda db: read_head_of(db, AUDIT_META)
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
        await self._listings.stop_counting()
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._committer:
            self._commits.stop()
            await self._committer
        await self._gets.drain()  # answer gets already issued
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
        return self._commits.queue_depth

    # ------------------------------------------------------------------ change feed

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` after each commit, in commit order (awaited if async).

        Callbacks run on the committer task: keep them fast (e.g. put on a queue).
        """
        self._feed.add(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._feed.remove(callback)

    # ------------------------------------------------------------------ writes

    async def create_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]:
        """Create a scope; creating an existing scope is not an error (``created: false``)."""
        op = CreateScopeOp(check_scope(scope, self.limits), self._rid(request_id))
        return await self._submit(op, audit)

    async def delete_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]:
        """Delete a scope and all its keys: ONE revision, ONE ``delete-scope`` event."""
        op = DeleteScopeOp(check_scope(scope, self.limits), self._rid(request_id))
        return await self._submit(op, audit)

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
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Set a JSON value (creating the scope if missing); optional CAS and TTL."""
        kop = new_key_op(
            self.limits, "set", scope, key, prev_revision, if_absent, True, value, ttl, "set"
        )
        return await self._submit(TxnOp([kop], self._rid(request_id), single=True), audit)

    async def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Delete a key; a missing key raises NotFound; optional CAS on mod_revision."""
        kop = new_key_op(
            self.limits, "delete", scope, key, prev_revision, False, False, None, None, "delete"
        )
        return await self._submit(TxnOp([kop], self._rid(request_id), single=True), audit)

    async def txn(
        self,
        ops: Iterable[dict[str, Any]],
        *,
        request_id: str | None = None,
        default_scope: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Apply set/delete/check ops atomically as ONE revision: all or nothing.

        Each op is ``{"op": "set"|"delete"|"check", "scope", "key", "value"?, "ttl"?,
        "prev_revision"?, "if_absent"?}``; a key may appear once per txn. An op without
        ``scope`` uses ``default_scope``.
        """
        kops = txn_ops(ops, self.limits, default_scope)
        return await self._submit(TxnOp(kops, self._rid(request_id), single=False), audit)

    async def import_json(
        self,
        doc: dict[str, Any],
        *,
        replace: bool = False,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Load an ``export_json`` document as one revision; ``replace`` drops other scopes."""
        scopes = import_scopes(doc, self.limits)
        return await self._submit(ImportOp(scopes, replace, self._rid(request_id)), audit)

    def _rid(self, request_id: Any) -> str | None:
        return check_request_id(request_id, self.limits)

    async def submit_op(self, op: Op) -> dict[str, Any]:
        """Commit ``op`` with the next batch (audit records and retention use this)."""
        return await self._submit(op)

    async def _submit(self, op: Op, audit: AuditContext | None = None) -> dict[str, Any]:
        op.audit = audit
        if self._closed:
            raise StorageError("state store is closed")
        result: dict[str, Any] = await self._commits.submit(op)
        return result

    def _write_batch(
        self, ops: list[Op], now: float, start: WriterState, db: sqlite3.Connection
    ) -> Committed:
        """Writer's thread: apply ``ops`` in ONE transaction and COMMIT (see apply_batch)."""
        return apply_batch(db, ops, now, start, json_each=self._json_each, keep=self._keep)

    async def _adopt(self, done: Committed, writes: int) -> None:
        """A batch committed: take its counters, then tell the listeners (before the
        callers are acknowledged)."""
        self.revision = done.revision
        self.compact_revision = done.compact
        self._history_count = done.history
        self._request_count = done.requests
        self.commits += 1
        self.ops_applied += writes
        if done.key_deltas or done.reset_counts:
            self._counts.adopt(done.revision, done.key_deltas, done.reset_counts)
        self.last_error = None
        if done.audit_rows:
            (seq, digest), (anchor_seq, anchor_hash) = done.audit, done.audit_anchor
            self.audit_head = Head(seq, digest, anchor_seq, anchor_hash)
            if self.audit_listener is not None:
                self.audit_listener(done.audit_rows, self.audit_head)
        if self._feed:
            await self._feed.publish(done.events)

    def _failed(self, err: StorageError) -> None:
        self.last_error = err.message

    def status(self) -> tuple[str, str | None]:
        """``warn`` with the reason while the last write failed (the file still serves)."""
        return ("warn", self.last_error) if self.last_error else ("pass", None)

    async def reap_expired(self) -> int:
        """Commit deletes for expired keys now (the reaper calls this every ``reap_interval``)."""
        return await ttl.reap_expired(
            self._earliest_expiry, self._submit, self._clock, self._reap_batch
        )

    async def _earliest_expiry(self) -> float | None:
        first: float | None = (await self._read(ttl.EARLIEST_EXPIRY_SQL))[0][0]
        return first

    # ------------------------------------------------------------------ reads

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        # single-statement reads need no lock: the reader's calls run in FIFO order on its
        # thread, and multi-statement reads are ONE hand-off each (see _read_txn)
        try:
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as e:
            raise storage_error("read", e) from None

    async def _read_txn(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one read transaction (= one snapshot) as ONE hand-off."""

        def run(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN")
            try:
                return fn(db)
            finally:
                db.execute("COMMIT")

        try:
            return await dbthread.on_db_thread(self._reader, run)
        except sqlite3.Error as e:
            raise storage_error(action, e) from None

    async def get(self, scope: str, key: str) -> dict[str, Any]:
        """Return value and metadata of a live key; missing scope or key raises NotFound."""
        check_scope(scope, self.limits)
        check_key(key, self.limits)
        row = await self._gets.get(scope, key, self._clock())
        exists, text, crev, mrev, ver, updated, expires, header = row
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

    async def list_scopes(self) -> list[dict[str, Any]]:
        """All scopes, sorted: ``[{scope, create_revision, keys}]`` (``[]`` when none)."""
        return await self._listings.list_scopes()

    async def list_keys(
        self, scope: str, *, prefix: str = "", include_values: bool = False
    ) -> list[dict[str, Any]]:
        """Live keys of a scope sorted by key with metadata (see Listings.list_keys)."""
        return await self._listings.list_keys(scope, prefix=prefix, include_values=include_values)

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
        """One page of a scope's live keys: ``{keys, more, next, revision, total}`` (see
        Listings.list_keys_page); NotFound if no such scope."""
        return await self._listings.list_keys_page(
            scope,
            prefix=prefix,
            glob=glob,
            after=after,
            limit=limit,
            include_values=include_values,
            max_bytes=max_bytes,
        )

    async def scope_exists(self, scope: str) -> bool:
        return await self._listings.scope_exists(scope)

    async def key_counts(self, scopes: list[str]) -> dict[str, int]:
        """Kept key counts of ``scopes``; the ones not known yet are counted once."""
        return await self._listings.key_counts(scopes)

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of scope names: ``{details: [{scope, create_revision, keys}], more,
        next, total, revision}`` (``total`` = scopes matching ``prefix``)."""
        return await self._listings.list_scopes_page(prefix=prefix, after=after, limit=limit)

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
        return reads.export_doc(rev, *page)

    def export_pages(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of an export from ONE snapshot (a private read-only connection holds
        one read transaction until the last page): a consistent export at one revision."""
        return reads.export_pages(
            self._read_uri, after=after, limit=limit, max_bytes=max_bytes, now=self._clock()
        )

    async def current_revision(self) -> int:
        """The revision of the newest commit (this process is the only writer)."""
        return self.revision

    async def changes_since(self, revision: int, *, limit: int | None = None) -> list[Event]:
        """Committed events with revision > ``revision`` in commit order.

        Raises Compacted (with ``oldest_revision``) if events after ``revision`` were pruned.
        With ``limit``, stops after the revision holding the limit-th event (never splits a
        revision, so resuming from the last event's revision loses nothing).
        """
        if check_revision(revision, "revision") is None:
            raise InvalidArgument("revision is required")
        check_limit(limit)
        # one snapshot: compaction cannot race the select
        compact, events = await self._read_txn(
            "read", lambda db: changes_after(db, revision, limit)
        )
        if events is None:
            raise Compacted(
                f"revision {revision} is compacted: history starts after"
                f" revision {compact}; resync with a full read",
                compact_revision=compact,
            )
        return events

    async def export_json(self) -> dict[str, Any]:
        """All scopes, keys and values at one revision (TTLs and history are not exported)."""
        now = self._clock()
        return await self._read_txn("export", lambda db: reads.export_all(db, now))

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
        size: int | None
        wal_size: int | None
        try:
            size = self.path.stat().st_size
            wal = side_file(self.path, "-wal")
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

    async def backup(
        self, dest: str | os.PathLike[str], *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Online backup to ``dest`` while writes go on (consistent snapshot, one file;
        see plantd.state.backup)."""
        return await backups.backup(self.path, dest, overwrite=overwrite)

    @classmethod
    def restore(
        cls, backup: str | os.PathLike[str], path: str | os.PathLike[str]
    ) -> dict[str, Any]:
        """Replace the database at ``path`` with a checked backup (OFFLINE: daemon stopped;
        see plantd.state.backup)."""
        return backups.restore(backup, path)
