"""The group committer: every write waiting at the moment a drain starts is applied in ONE
transaction and acknowledged only after COMMIT, so an acknowledged write is durable.

Pull style: a drain job on the writer's thread takes EVERY write waiting when it starts,
applies them in one transaction and commits. Two drains are kept queued on that thread, so
when one commit ends the next batch starts at once with whatever arrived meanwhile, without a
round trip through the event loop. :meth:`GroupCommitter.run` adopts finished drains in
order: the owner publishes the changes, then the callers are acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from plantd.state import dbthread
from plantd.state.batch import Committed, Op, WriterState
from plantd.state.errors import StorageError, storage_error
from plantd.storage.sqlite import SqliteThread

log = logging.getLogger("plantd.state.store")

DRAINS_AHEAD = 2
"""Drain jobs queued on the writer's thread: one committing, one ready to take the next batch."""

WriteBatch = Callable[[list[Op], float, WriterState, sqlite3.Connection], Committed]
"""Apply a batch in one transaction on the writer's thread (see plantd.state.batch)."""


@dataclass
class Drained:
    """One drain of the write queue: its writes and the commit (or the error) they got."""

    batch: list[tuple[Op, asyncio.Future[Any]]]
    committed: Committed | None
    error: BaseException | None


class GroupCommitter:
    """Queue of writes, the drains on the writer's thread, and the adoption of their commits.

    ``adopt(committed, n_writes)`` runs on the event loop for each commit before its callers
    are acknowledged; ``failed(error)`` for each batch that was rolled back.
    """

    def __init__(
        self,
        writer: SqliteThread,
        write_batch: WriteBatch,
        *,
        adopt: Callable[[Committed, int], Awaitable[None]],
        failed: Callable[[StorageError], None],
        clock: Callable[[], float],
        batch_max: int,
        start: WriterState,
    ) -> None:
        self._writer = writer
        self._write_batch = write_batch
        self._adopt = adopt
        self._failed = failed
        self._clock = clock
        self._batch_max = batch_max
        # writes waiting for a drain: appended on the event loop, taken on the writer's thread
        self._pending: collections.deque[tuple[Op, asyncio.Future[Any]]] = collections.deque()
        self._drains: asyncio.Queue[asyncio.Future[Drained | None] | None] = asyncio.Queue()
        self._outstanding = 0  # drains started and not yet adopted by run()
        self.stopping = False
        # owned by the writer's thread once run() starts
        self._state = start

    @property
    def queue_depth(self) -> int:
        """Writes waiting for a drain (not yet in a transaction)."""
        return len(self._pending)

    async def submit(self, op: Op) -> Any:
        """Queue ``op``; return its result once committed (or raise its error)."""
        if self.stopping:
            raise StorageError("state store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._outstanding < DRAINS_AHEAD:
            self._start_drain()
        return await fut

    def stop(self) -> None:
        """Ask :meth:`run` to return once every queued write is adopted."""
        self._drains.put_nowait(None)

    def _start_drain(self) -> None:
        self._outstanding += 1
        job = dbthread.on_db_thread(self._writer, self._drain)
        self._drains.put_nowait(asyncio.ensure_future(job))

    def _drain(self, db: sqlite3.Connection) -> Drained | None:
        """Writer's thread: commit everything queued now as ONE transaction."""
        if self.stopping:
            return None  # run() is gone: nobody would acknowledge these writes
        batch: list[tuple[Op, asyncio.Future[Any]]] = []
        pending = self._pending
        while pending and len(batch) < self._batch_max:
            op, fut = pending.popleft()
            if not fut.done():  # a caller cancelled before this point was never acknowledged
                batch.append((op, fut))
        if not batch:
            return None
        try:
            done = self._write_batch([op for op, _ in batch], self._clock(), self._state, db)
        except BaseException as e:  # rolled back: every caller of the batch gets the error
            return Drained(batch, None, e)
        self._state = done.writer_state
        return Drained(batch, done, None)

    async def run(self) -> None:
        """Adopt drains in commit order; after :meth:`stop`, run until nothing is waiting."""
        while True:
            job = await self._drains.get()
            if job is None:  # stop(): return once every queued write is adopted
                if not self._pending and not self._outstanding:
                    return
                # drains started after the sentinel (by an adoption) sit behind it: go
                # round again after them
                if self._pending and self._outstanding < DRAINS_AHEAD:
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
                await self._finish(drained)
            if self._pending and self._outstanding < DRAINS_AHEAD:
                self._start_drain()

    async def _settle_after_cancel(self, job: asyncio.Future[Drained | None]) -> None:
        """:meth:`run` is being cancelled: report the real outcome of every write already
        on the writer's thread (nobody is told "not applied" about a committed write) and
        refuse the writes no drain has taken."""
        self.stopping = True
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
                        await self._finish(drained)
        self._outstanding = 0
        refused = StorageError("state store stopped before the write; nothing was applied")
        while self._pending:
            _op, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(refused)

    async def _finish(self, drained: Drained) -> None:
        """Adopt a committed batch (publish, then acknowledge) or fail all its callers."""
        batch, e = drained.batch, drained.error
        if e is not None:
            if isinstance(e, sqlite3.Error):
                err = storage_error("write transaction", e)
            elif isinstance(e, StorageError):
                err = e
            else:
                log.error("state store: unexpected error in a write batch", exc_info=e)
                err = StorageError(f"internal error in write batch: {e!r}; nothing was applied")
            self._failed(err)
            for _op, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        done = drained.committed
        assert done is not None
        await self._adopt(done, len(batch))
        for (_op, fut), (ok, res) in zip(batch, done.outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(res)
            else:
                fut.set_exception(res)
