"""Listings of scopes and keys, whole or by page, with the key counts behind their
``total`` (plantd.state.counts): counted once in the background after open, then kept up to
date by every commit, so a listing of a big scope does not count it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from plantd.protocol import jsoncodec
from plantd.state import dbthread, pages
from plantd.state.counts import KeyCounts
from plantd.state.errors import InvalidArgument, NotFound
from plantd.state.validation import Limits, check_scope

log = logging.getLogger("plantd.state.store")

_T = TypeVar("_T")

Read = Callable[[str, Iterable[Any]], Awaitable[list[Any]]]
"""One read statement on the store's reader connection."""


class ReadTxn(Protocol):
    """The store's ``_read_txn``: run ``fn`` in one read snapshot as one hand-off."""

    async def __call__(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...


class Listings:
    """Scope and key listings on the store's reader, and the kept key counts."""

    def __init__(
        self,
        read: Read,
        read_txn: ReadTxn,
        *,
        counts: KeyCounts,
        limits: Limits,
        clock: Callable[[], float],
        read_uri: str,
    ) -> None:
        self._read = read
        self._read_txn = read_txn
        self._counts = counts
        self.limits = limits
        self._clock = clock
        self._read_uri = read_uri
        self._counter: asyncio.Task[None] | None = None

    def start_counting(self) -> None:
        """Count every scope's keys in the background (start-up does not wait)."""
        self._counter = asyncio.create_task(self._count_all(), name="state-key-count")

    async def stop_counting(self) -> None:
        if self._counter:
            self._counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counter

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
        check_scope(scope, self.limits)
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
        check_scope(scope, self.limits)
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
            conn = await dbthread.read_only(self._read_uri)
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
                rev, counted = await dbthread.on_db_thread(conn, read)
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
