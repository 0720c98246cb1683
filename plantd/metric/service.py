"""MDP operations of ``org.plantd.module.Metric``: ``list``, ``latest``, ``range``, ``health``."""

from __future__ import annotations

import time
from typing import Any

from plantd.client.worker import Worker, error_document
from plantd.metric import SERVICE
from plantd.metric.store import MetricStore, QueryError

__all__ = ["make_worker"]


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def _filter(doc: Any, name: str) -> str | None:
    value = doc.get(name) if isinstance(doc, dict) else None
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise QueryError(f"{name}: expected a string")
    return value


def make_worker(
    store: MetricStore,
    endpoint: str,
    *,
    service: str = SERVICE,
    heartbeat_interval: float = 2.5,
    liveness: int = 3,
    extra_health: Any = None,
) -> Worker:
    """A :class:`Worker` answering from ``store``; the caller runs and stops it."""
    worker = Worker(endpoint, service, heartbeat_interval=heartbeat_interval, liveness=liveness)
    started = time.monotonic()

    @worker.operation("list")
    async def list_channels(_doc: Any) -> dict[str, Any]:
        return ok({"channels": store.channels()})

    @worker.operation("latest")
    async def latest(doc: Any) -> dict[str, Any]:
        try:
            device, channel = _filter(doc, "device"), _filter(doc, "channel")
        except QueryError as exc:
            return error_document("invalid_argument", str(exc))
        return ok({"samples": store.latest_samples(device, channel)})

    @worker.operation("range")
    async def range_(doc: Any) -> dict[str, Any]:
        try:
            samples = await store.range(doc if isinstance(doc, dict) else {})
        except QueryError as exc:
            return error_document("invalid_argument", str(exc))
        return ok({"samples": samples})

    @worker.operation("health")
    async def health(_doc: Any) -> dict[str, Any]:
        counters = store.counters()
        doc = {
            "status": "warn" if counters["dropped"] or counters["failed"] else "pass",
            "service": service,
            "served": worker.served,
            "uptime_s": round(time.monotonic() - started, 3),
            "ingest": counters,
        }
        if extra_health is not None:
            doc.update(extra_health())
        return {"success": True, "data": doc, **doc}

    return worker
