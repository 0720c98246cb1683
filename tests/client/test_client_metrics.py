"""Client-side request metrics (plantd.client.metrics): counted per service, bounded labels,
exposed as Prometheus families; real broker and worker in this event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plantd.client import Client, SyncClient
from plantd.client import metrics as client_metrics
from plantd.client.errors import RequestRejected, UnknownService
from plantd.client.worker import Worker
from plantd.telemetry import OTHER, Latency


def snapshot(name: str) -> tuple[int, int]:
    s = client_metrics.STATS.by_key.get(name, Latency())
    return s.requests, s.errors


async def test_requests_errors_and_unknown_services_are_counted(loop_broker: str) -> None:
    worker = Worker(loop_broker, "cm.svc", heartbeat_interval=0.2)

    @worker.operation("ok")
    async def ok(doc: Any) -> Any:
        return doc

    @worker.operation("no")
    async def no(doc: Any) -> Any:
        return {"success": False, "code": "nope", "error": "refused"}

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.connected.wait(), 10)
    svc, other = snapshot("cm.svc"), snapshot(OTHER)
    try:
        async with Client(loop_broker, timeout=5) as client:
            await client.call("cm.svc", "ok", {})
            with pytest.raises(RequestRejected):
                await client.call("cm.svc", "no", {})  # a reply: the worker counts the error
            with pytest.raises(UnknownService):
                await client.call("cm.typo-in-a-url", "ok", {})
            await client.ping()  # MMI: not counted
        with SyncClient(loop_broker, timeout=5) as sync:
            await asyncio.to_thread(sync.call, "cm.svc", "ok", {})
    finally:
        await worker.stop()
        await asyncio.gather(task, return_exceptions=True)

    assert snapshot("cm.svc") == (svc[0] + 3, svc[1])
    assert snapshot(OTHER) == (other[0] + 1, other[1] + 1)
    assert "cm.typo-in-a-url" not in client_metrics.STATS.by_key
    assert not any(k.startswith("mmi.") for k in client_metrics.STATS.by_key)

    families = {f.name: f for f in client_metrics.client_families()}
    assert set(families) == {
        "plantd_client_requests",
        "plantd_client_request_errors",
        "plantd_client_request_duration_seconds",
    }
    (count,) = [
        s for s in families["plantd_client_requests"].samples if s.labels == {"service": "cm.svc"}
    ]
    assert count.value == snapshot("cm.svc")[0]


def test_service_label_values_are_bounded() -> None:
    stats = client_metrics.STATS
    before = dict(stats.by_key)
    try:
        for i in range(client_metrics.MAX_SERVICES + 20):
            client_metrics.observe(b"cm.bound.%d" % i, 0.001, None)
        assert len(stats.by_key) <= client_metrics.MAX_SERVICES + 1  # + other
        assert OTHER in stats.by_key
    finally:
        stats.by_key.clear()
        stats.by_key.update(before)
