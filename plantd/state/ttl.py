"""TTL: expired keys are invisible at once (reads compare ``expires`` with the clock) and
deleted by the reaper as ordinary changes, each with its own revision and event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from plantd.state.batch import DELETE_KEY_SQL, Batch, Op
from plantd.state.errors import StateError

log = logging.getLogger("plantd.state.store")

EARLIEST_EXPIRY_SQL = "SELECT min(expires) FROM kv WHERE expires IS NOT NULL"


class ReapOp(Op):
    """Delete up to ``limit`` expired keys, each its own revision (bounded work per pass)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def apply(self, b: Batch) -> dict[str, Any]:
        rows = b.db.execute(
            "SELECT scope, key FROM kv WHERE expires IS NOT NULL AND expires <= ?"
            " ORDER BY expires LIMIT ?",
            (b.now, self.limit),
        ).fetchall()
        if rows:
            b.db.executemany(DELETE_KEY_SQL, rows)
        for scope, key in rows:
            b.count(scope, -1)
            b.emit(b.begin_change(), "delete", scope, key, None, None)
        return {"expired": len(rows)}


async def reap_expired(
    earliest_expiry: Callable[[], Awaitable[float | None]],
    submit: Callable[[Op], Awaitable[dict[str, Any]]],
    clock: Callable[[], float],
    batch: int,
) -> int:
    """Commit deletes for the keys expired by now, ``batch`` per write; return how many."""
    total = 0
    while True:
        first = await earliest_expiry()
        if first is None or first > clock():
            return total
        n: int = (await submit(ReapOp(batch)))["expired"]
        total += n
        if n < batch:
            return total
        await asyncio.sleep(0)  # bounded work per pass: let other writers in


async def run_reaper(interval: float, reap: Callable[[], Awaitable[int]]) -> None:
    """Reap every ``interval`` seconds until cancelled; a failed pass is logged, not fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            await reap()
        except StateError as e:
            log.warning("state store: TTL reaper failed: %s", e)
