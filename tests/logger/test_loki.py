"""Loki forwarding against a small aiohttp server that records every push it receives."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plantd.logger.loki import LokiForwarder, push_payload, push_url
from plantd.logger.store import LogStore, StoreSettings
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.timeout(30)


class FakeLoki:
    """Records push bodies; answers the first ``fail_first`` pushes with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.url = ""

    async def push(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500, text="ingester not ready")
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.pushes.append(json.loads(raw))
        self.headers.append(dict(request.headers))
        return web.Response(status=204)

    def entries(self) -> list[tuple[dict[str, str], list[Any]]]:
        return [(s["stream"], v) for p in self.pushes for s in p["streams"] for v in s["values"]]


@pytest.fixture
async def loki() -> AsyncIterator[FakeLoki]:
    fake = FakeLoki(fail_first=1)
    app = web.Application()
    app.router.add_post("/loki/api/v1/push", fake.push)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def test_store_batches_arrive_at_loki_with_few_labels(tmp_path: Path, loki: FakeLoki) -> None:
    fwd = LokiForwarder(loki.url, batch_size=40, batch_wait=0.05, min_backoff=0.05, tenant="plant")
    settings = StoreSettings(
        path=tmp_path / "l.sqlite", log_backend=None, event_backend=None, flush_interval=0.01
    )
    await fwd.start()
    try:
        async with LogStore(settings) as store:
            store.listeners.append(fwd.offer)
            now = time.time()
            for i in range(100):
                store.add(
                    "org.plantd.A.info",
                    {
                        "ts": now + i / 1000,
                        "level": "info" if i % 10 else "error",
                        "service": "org.plantd.A",
                        "host": "h1",
                        "pid": 11,
                        "logger": "plantd.a",
                        "msg": f"m{i}",
                        "fields": {"i": i, "valve id": "V1"},
                        "seq": i + 1,
                    },
                )
            await store.flush()
            await wait_until_async(lambda: fwd.sent == 100, 10)
    finally:
        await fwd.stop()

    assert loki.attempts >= 2 and fwd.retries >= 1  # the first push got a 500 and was retried
    assert fwd.failed == 0 and fwd.dropped == 0
    assert len(loki.pushes) >= 3  # batches of at most 40
    assert all(h.get("X-Scope-OrgID") == "plant" for h in loki.headers)
    entries = loki.entries()
    assert len(entries) == 100
    labels = {tuple(sorted(stream.items())) for stream, _ in entries}
    assert labels == {
        (("host", "h1"), ("level", "info"), ("service", "org.plantd.A")),
        (("host", "h1"), ("level", "error"), ("service", "org.plantd.A")),
    }
    by_msg = {v[1]: v for _, v in entries}
    ts_ns, line, meta = by_msg["m7"]
    assert line == "m7" and int(ts_ns) == pytest.approx((now + 0.007) * 1e9, abs=1e3)
    assert meta == {
        "logger": "plantd.a",
        "pid": "11",
        "seq": "8",
        "source": "log",
        "topic": "org.plantd.A.info",
        "i": "7",
        "valve_id": "V1",
    }


async def test_forwarder_queue_is_bounded_and_never_blocks() -> None:
    # nothing listens on this port: every push fails, the queue must stay bounded
    fwd = LokiForwarder(
        "http://127.0.0.1:9/",
        batch_size=5,
        batch_wait=0.01,
        max_queue=20,
        min_backoff=0.01,
        max_backoff=0.02,
        max_retries=1,
        timeout=0.5,
    )
    assert fwd.url == "http://127.0.0.1:9/loki/api/v1/push"
    await fwd.start()
    try:
        started = time.monotonic()
        fwd.offer([{"msg": str(i)} for i in range(100)])
        assert time.monotonic() - started < 0.05
        assert fwd.queued <= 20 and fwd.dropped >= 80
        await wait_until_async(lambda: fwd.failed >= 5, 10)
        assert fwd.last_error
    finally:
        await asyncio.wait_for(fwd.stop(drain_timeout=0.5), 5)


def test_push_payload_shape() -> None:
    doc = push_payload([{"ts": 1.5, "level": "warning", "service": "s", "host": "h", "msg": "x"}])
    assert doc == {
        "streams": [
            {
                "stream": {"service": "s", "level": "warning", "host": "h"},
                "values": [["1500000000", "x", {}]],
            }
        ]
    }
    assert push_url("http://loki:3100/custom/push") == "http://loki:3100/custom/push"
