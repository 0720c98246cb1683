"""The audit trail as a daemon writes it: batched, durable, off the event loop, published.

A service records entries with ``await writer.record(...)``; entries that arrive while a batch
is being committed wait and go into the next one, so under load many rows share ONE SQLite
transaction and ONE sidecar move (instead of three fsyncs per row), and the caller resumes
only once its rows are durable. The database work runs on its own thread
(:class:`~plantd.storage.sqlite.SqliteThread`), never on the event loop.

After each batch the rows are published on the event bus (topic ``audit.<service>``), and the
chain head (seq, hash, anchor) is published on ``audit.head`` every ``head_interval`` seconds,
so that another host holds a copy of the head a rewrite of the whole file would have to match
(the one tampering ``plant audit verify`` cannot catch alone). Rows older than ``retention``
are pruned hourly (the anchor keeps the chain verifiable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plantd.identity.audit import (
    DEFAULT_RETENTION,
    Entry,
    Head,
    append_entries,
    head_path_of,
    open_audit_db,
    prune_rows,
    read_head_of,
    write_head,
)
from plantd.storage.sqlite import SqliteThread

log = logging.getLogger("plantd.identity.audit")

#: topic of the periodic chain-head announcement on the event bus
HEAD_TOPIC = "audit.head"
#: entries per transaction at most (a burst beyond it takes several batches)
BATCH_MAX = 2048
PRUNE_INTERVAL = 3600.0
#: the head sidecar moves at most this often (seconds); a batch in between leaves it behind
#: the last row, on the chain (verify accepts that), and the upkeep task catches it up
SIDECAR_INTERVAL = 0.25

Publish = Callable[[str, dict[str, Any]], bool]


def audit_topic(service: str) -> str:
    """The event-bus topic of the audit rows written by ``service``."""
    return f"audit.{service}"


class AuditUpkeep:
    """What every daemon keeping an audit chain does besides appending: publish each batch
    of rows on ``audit.<service>``, keep the head sidecar close behind the head, publish the
    head every ``head_interval`` and prune hourly. Subclasses say how the sidecar moves and
    how rows are pruned (:class:`AuditWriter`: its own file; the state store: its database)."""

    def __init__(
        self,
        head_path: Path,
        *,
        service: str,
        publish: Publish | None,
        retention: float,
        head_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.head_path = head_path
        self.service = service
        self.topic = audit_topic(service)
        self._publish = publish
        self.retention = retention
        self.head_interval = head_interval
        self._clock = clock
        self._maintain: asyncio.Task[None] | None = None
        self.head = Head.empty()
        self.rows = 0
        self.batches = 0
        self.failures = 0
        self.published = 0
        self.last_error: str | None = None
        self._sidecar_due = 0.0  # monotonic time the sidecar may be moved again
        self._sidecar_dirty = False

    def start_upkeep(self) -> None:
        self._maintain = asyncio.create_task(self._maintenance(), name="audit.maintenance")

    async def stop_upkeep(self) -> None:
        if self._maintain is not None:
            self._maintain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintain

    def adopt_rows(self, rows: list[dict[str, Any]], head: Head | None) -> None:
        """A batch of rows is durable: take the head (``None``: the sidecar was not moved
        with it, so it is behind until the upkeep catches it up) and publish the rows."""
        if head is not None:
            self._sidecar_due = time.monotonic() + SIDECAR_INTERVAL
            self._sidecar_dirty = False
        else:
            self._sidecar_dirty = True
            last = rows[-1]
            head = Head(last["seq"], last["hash"], self.head.anchor_seq, self.head.anchor_hash)
        self.head, self.rows, self.batches = head, self.rows + len(rows), self.batches + 1
        self.last_error = None
        self._send(self.topic, {"service": self.service, "rows": rows})

    def _send(self, topic: str, doc: dict[str, Any]) -> None:
        if self._publish is None:
            return
        try:
            if self._publish(topic, doc):
                self.published += 1
        except Exception:
            log.exception("audit publish on %s failed", topic)

    def head_doc(self) -> dict[str, Any]:
        h = self.head
        return {
            "service": self.service,
            "seq": h.seq,
            "hash": h.hash,
            "anchor_seq": h.anchor_seq,
            "anchor_hash": h.anchor_hash,
            "ts": self._clock(),
        }

    def _idle(self) -> bool:
        """No batch is being written (the sidecar may move)."""
        return True

    async def _catch_up_sidecar(self) -> None:
        raise NotImplementedError

    async def prune(self, now: float | None = None) -> int:
        raise NotImplementedError

    async def _maintenance(self) -> None:
        """Catch the sidecar up, publish the head every ``head_interval``, prune hourly."""
        next_prune = next_head = 0.0
        while True:
            now = time.monotonic()
            try:
                if self._idle():
                    await self._catch_up_sidecar()
                if now >= next_prune:
                    next_prune = now + PRUNE_INTERVAL
                    deleted = await self.prune()
                    if deleted:
                        log.info("audit: pruned %d rows older than %ss", deleted, self.retention)
            except Exception as exc:
                self.last_error = f"audit upkeep failed: {exc}"
                log.error("%s", self.last_error)
            if now >= next_head:
                next_head = now + self.head_interval
                self._send(HEAD_TOPIC, self.head_doc())
            await asyncio.sleep(min(SIDECAR_INTERVAL, self.head_interval))


class AuditWriter(AuditUpkeep):
    """Appends audit entries in batches on a database thread; see the module docstring."""

    def __init__(
        self,
        thread: SqliteThread,
        path: Path,
        *,
        service: str,
        publish: Publish | None = None,
        retention: float = DEFAULT_RETENTION,
        head_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            head_path_of(path),
            service=service,
            publish=publish,
            retention=retention,
            head_interval=head_interval,
            clock=clock,
        )
        self._thread = thread
        self.path = path
        self._pending: deque[tuple[list[Entry], asyncio.Future[list[dict[str, Any]]]]] = deque()
        self._draining: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        service: str,
        publish: Publish | None = None,
        retention: float = DEFAULT_RETENTION,
        head_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> AuditWriter:
        """Open (creating) the audit database at ``path`` and start the periodic work."""
        path.parent.mkdir(parents=True, exist_ok=True)
        thread = await SqliteThread.connect(path, name="audit")
        try:
            await thread.run(open_audit_db)
            head = await thread.run(read_head_of)
        except BaseException:
            await thread.close()
            raise
        self = cls(
            thread,
            path,
            service=service,
            publish=publish,
            retention=retention,
            head_interval=head_interval,
            clock=clock,
        )
        self.head = head
        self.start_upkeep()
        return self

    async def close(self) -> None:
        """Finish the queued batches, move the sidecar to the head, close the database."""
        await self.stop_upkeep()
        while self._draining is not None and not self._draining.done():
            await asyncio.shield(self._draining)
        try:
            await self._catch_up_sidecar()
        finally:
            await self._thread.close()

    async def _catch_up_sidecar(self) -> None:
        if self._sidecar_dirty:
            self._sidecar_dirty = False
            self.head = await self._thread.run(lambda db: write_head(db, self.head_path))
            self._sidecar_due = time.monotonic() + SIDECAR_INTERVAL

    # ------------------------------------------------------------------ writing
    async def record(self, *entries: Entry) -> list[dict[str, Any]]:
        """Append ``entries`` (in one batch with whatever else is waiting); returns their
        rows once durable. Raises the database error if the batch failed."""
        if not entries:
            return []
        return await asyncio.shield(self.submit(*entries))  # a cancelled caller: still written

    def submit(self, *entries: Entry) -> asyncio.Future[list[dict[str, Any]]]:
        """Queue ``entries`` now; the future settles once they are durable (or failed)."""
        fut: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(entries), fut))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain(), name="audit.drain")
        return fut

    async def _drain(self) -> None:
        while self._pending:
            batch: list[tuple[list[Entry], asyncio.Future[list[dict[str, Any]]]]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= BATCH_MAX):
                item = self._pending.popleft()
                batch.append(item)
                count += len(item[0])
            entries = [e for items, _ in batch for e in items]
            now = self._clock()

            sidecar = time.monotonic() >= self._sidecar_due

            def job(
                db: sqlite3.Connection,
                entries: list[Entry] = entries,
                now: float = now,
                sidecar: bool = sidecar,
            ) -> Any:
                rows = append_entries(db, entries, now)
                return rows, write_head(db, self.head_path) if sidecar else None

            try:
                rows, head = await self._thread.run(job)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"audit append failed: {exc}"
                log.error("%s (%d rows lost)", self.last_error, len(entries))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            at = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result(rows[at : at + len(items)])
                at += len(items)
            self.adopt_rows(rows, head)

    # ------------------------------------------------------------------ upkeep
    def _idle(self) -> bool:
        return self._draining is None or self._draining.done()

    async def prune(self, now: float | None = None) -> int:
        """Delete rows older than the retention (keeping the chain verifiable)."""
        when = self._clock() if now is None else now

        def job(db: sqlite3.Connection) -> tuple[int, Head]:
            deleted = prune_rows(db, when - self.retention, when)
            return deleted, write_head(db, self.head_path) if deleted else read_head_of(db)

        deleted, self.head = await self._thread.run(job)
        return deleted


__all__ = ["HEAD_TOPIC", "AuditUpkeep", "AuditWriter", "Entry", "audit_topic"]
