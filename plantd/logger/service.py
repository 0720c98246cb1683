"""MDP operations of ``org.plantd.Logger``: ``query``, ``stats``, ``health``.

Replies follow the plantd convention: ``{"success": true, "data": {...}}`` or
``{"success": false, "error": ..., "code": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from plantd.client.worker import Worker, error_document
from plantd.logger import SERVICE
from plantd.logger.store import LogStore, QueryError

__all__ = ["make_worker", "serve_until", "stop_worker"]


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def make_worker(
    store: LogStore,
    endpoint: str,
    *,
    service: str = SERVICE,
    heartbeat_interval: float = 2.5,
    liveness: int = 3,
    extra_health: Any = None,
) -> Worker:
    """A :class:`Worker` serving ``store``; the caller runs and stops it."""
    worker = Worker(endpoint, service, heartbeat_interval=heartbeat_interval, liveness=liveness)
    started = time.monotonic()

    @worker.operation("query")
    async def query(doc: Any) -> dict[str, Any]:
        try:
            records = await store.query(doc if isinstance(doc, dict) else {})
        except QueryError as exc:
            return error_document("invalid_argument", str(exc))
        return ok({"records": records})

    @worker.operation("stats")
    async def stats(_doc: Any) -> dict[str, Any]:
        return ok(await store.stats())

    @worker.operation("health")
    async def health(_doc: Any) -> dict[str, Any]:
        counters = store.counters()
        status = "pass"
        if counters["dropped"] or counters["failed"]:
            status = "warn"
        doc = {
            "status": status,
            "service": service,
            "served": worker.served,
            "uptime_s": round(time.monotonic() - started, 3),
            "ingest": counters,
        }
        if extra_health is not None:
            doc.update(extra_health())
        return {"success": True, "data": doc, **doc}

    return worker


async def stop_worker(worker: Worker, task: asyncio.Task[None], timeout: float = 5.0) -> None:
    """Leave the broker cleanly and wait (bounded) for ``worker.run()`` to end.

    ``Worker.stop`` closes the socket under the pending poll, so ``run`` may end cancelled;
    that is a normal stop, not an error.
    """
    await worker.stop()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve_until(
    worker: Worker, stop: asyncio.Event, *, register_timeout: float = 3.0,
    on_registered: Any = None,
) -> None:
    """Run ``worker`` until ``stop`` is set (or it fails), then leave the broker cleanly.

    Waits up to ``register_timeout`` for the READY so a ``plant up`` followed by a request
    does not race the registration; without a broker the worker keeps reconnecting.
    """
    task = asyncio.create_task(worker.run(), name=f"{worker.service}.worker")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(worker.connected.wait(), register_timeout)
    if on_registered is not None:
        on_registered()
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            await stop_worker(worker, task)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
