"""The state service's audit trail inside the state database.

Every audited write leaves its rows in the SAME transaction as the write (one COMMIT, one
fsync for both): a row is durable exactly when its write is, a crash can neither lose the row
of an acknowledged write nor leave a row for a write that did not happen. The old value comes
from the row the write looks up anyway (:class:`plantd.state.batch.Batch`), not from a read
before the write. The chain's end is kept in memory by the one writer (the group committer's
:class:`~plantd.state.batch.WriterState`) and recovered from the table on open.

Records that go with no write (refusals, backups) and the hourly retention are ops of the
same committer: they share the next commit. :class:`StoreAudit` does the rest of what a
daemon keeping a chain does (publish rows and head, keep the head sidecar close behind) and
registers the chain in the keyring's ``audit.d`` so ``plant audit`` lists and verifies it with
the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantd.identity.audit import (
    DEFAULT_RETENTION,
    AuditSource,
    Entry,
    Head,
    drop_rows_before,
    register_source,
    write_head_file,
)
from plantd.identity.auditwriter import SIDECAR_INTERVAL, AuditUpkeep, Publish
from plantd.state.batch import Batch, Op
from plantd.state.schema import AUDIT_META

if TYPE_CHECKING:
    from plantd.state.store import StateStore

__all__ = ["AuditContext", "StoreAudit", "state_source"]


@dataclass(frozen=True)
class AuditContext:
    """Who asks for a write, and how: what every audit row of that write carries."""

    principal: str
    service: str
    operation: str
    peer: str | None = None
    request_id: str | None = None

    def entry(
        self, scope: str | None, key: str | None, old: Any, new: Any, revision: int | None
    ) -> Entry:
        # positional (Entry's field order): a txn makes one per key on the writer's thread
        return Entry(
            self.principal,
            self.service,
            self.operation,
            "ok",
            self.peer,
            scope,
            key,
            old,
            new,
            revision,
            self.request_id,
        )


class RecordOp(Op):
    """Audit entries with no write of their own (a refusal, a backup)."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    def apply(self, b: Batch) -> dict[str, Any]:
        for e in self.entries:
            b.audit(e)
        return {}


class PruneOp(Op):
    """Drop rows older than ``cutoff`` (never the chain's last), move the anchor and record
    the pruning, in one transaction."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff

    def apply(self, b: Batch) -> dict[str, Any]:
        dropped = drop_rows_before(b.db, self.cutoff, b.audit_last, AUDIT_META)
        if dropped is None:
            return {"deleted": 0}
        deleted, record = dropped
        assert isinstance(record.new, dict)
        b.audit_anchor = (record.new["pruned_through"], record.new["anchor_hash"])
        b.audit(record)
        return {"deleted": deleted}


def state_source(service: str, db: Path) -> AuditSource:
    """The chain the state store ``db`` keeps (its sidecar: ``<db>.audit.head``)."""
    return AuditSource(service, db, AUDIT_META, db.with_name(db.name + ".audit.head"))


class StoreAudit(AuditUpkeep):
    """The upkeep of the chain in a :class:`~plantd.state.store.StateStore`: rows are
    published after each commit, the sidecar follows within ``SIDECAR_INTERVAL``, the head
    goes out every ``head_interval``, retention is applied hourly."""

    def __init__(
        self,
        store: StateStore,
        source: AuditSource,
        *,
        publish: Publish | None = None,
        retention: float = DEFAULT_RETENTION,
        head_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            source.head_path,
            service=source.name,
            publish=publish,
            retention=retention,
            head_interval=head_interval,
            clock=clock,
        )
        self.store = store
        self.source = source

    @classmethod
    async def open(
        cls,
        store: StateStore,
        *,
        service: str,
        keyring_audit: Path,
        publish: Publish | None = None,
        retention: float = DEFAULT_RETENTION,
        head_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> StoreAudit:
        """Register the store's chain in the keyring's ``audit.d`` and start the upkeep."""
        source = state_source(service, store.path)
        await asyncio.to_thread(register_source, keyring_audit, source)
        self = cls(
            store,
            source,
            publish=publish,
            retention=retention,
            head_interval=head_interval,
            clock=clock,
        )
        self.head = store.audit_head
        store.audit_listener = self._committed
        self.start_upkeep()
        return self

    async def close(self) -> None:
        """Stop the upkeep and move the sidecar to the head (call before the store closes)."""
        await self.stop_upkeep()
        self.store.audit_listener = None
        await self._catch_up_sidecar(force=True)

    def _committed(self, rows: list[dict[str, Any]], head: Head) -> None:
        """Store hook, after each commit holding audit rows (before its writers are told)."""
        self.head = head
        self.adopt_rows(rows, None)

    async def record(self, *entries: Entry) -> None:
        """Commit ``entries`` with the next batch of writes; returns once durable."""
        if entries:
            await self.store.submit_op(RecordOp(list(entries)))

    def submit(self, *entries: Entry) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.record(*entries))

    async def _catch_up_sidecar(self, force: bool = False) -> None:
        if self._sidecar_dirty and (force or time.monotonic() >= self._sidecar_due):
            self._sidecar_dirty = False
            await asyncio.to_thread(write_head_file, self.head, self.head_path)
            self._sidecar_due = time.monotonic() + SIDECAR_INTERVAL

    async def prune(self, now: float | None = None) -> int:
        when = self._clock() if now is None else now
        result = await self.store.submit_op(PruneOp(when - self.retention))
        return int(result["deleted"])
