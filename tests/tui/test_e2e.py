"""End to end: the console against a real `plant daemon run broker` process (127.0.0.1 only).

Covers what fakes cannot: the real MMI documents, a real PARTIAL stream, broker loss shown as a
banner (no traceback) and automatic reconnection when the broker comes back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from plantd.tui.app import PlantApp
from plantd.tui.source import LiveSource, SourceSettings
from plantd.tui.widgets.connection import Banner, ConnectionBar
from tests.conftest import BrokerProcess, kill_pid, start_broker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def wait_until(pilot: Any, predicate: Any, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return True
        await pilot.pause(0.1)
    return predicate()


async def test_console_against_real_broker(
    broker: BrokerProcess, plantd_home: Path, tmp_path: Path
) -> None:
    from plantd.client import Worker

    worker = Worker(broker.endpoint, "org.plantd.test.Stream", heartbeat_interval=0.25)

    @worker.operation("count")
    async def count(payload: dict[str, Any]) -> Any:
        for i in range(int(payload.get("n", 3))):
            yield {"i": i}

    worker_task = asyncio.create_task(worker.run())
    settings = SourceSettings(
        endpoint=broker.endpoint,
        timeout=1.0,
        state_bus=broker.bus("state")[1],
        log_bus=broker.bus("log")[1],
    )
    app = PlantApp(LiveSource(settings), poll_interval=0.2, animations=False)
    restarted: BrokerProcess | None = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.query_one("#services")
            assert await wait_until(
                pilot, lambda: "org.plantd.test.Stream" in [str(k.value) for k in table.rows]
            ), "service never appeared in the overview"
            assert app.query_one(ConnectionBar).connected is True

            await pilot.press("4")
            await pilot.click("#call-service")
            await pilot.press(*"org.plantd.test.Stream", "tab", *"count", "f9")
            status = app.query_one("#call-status")
            assert await wait_until(pilot, lambda: "PARTIAL + FINAL" in str(status.render()))
            assert "2 PARTIAL + FINAL" in str(status.render())

            kill_pid(broker.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.proc.wait(timeout=2)
            banner = app.query_one(Banner)
            assert await wait_until(pilot, lambda: banner.display, timeout=8.0)
            assert app.query_one(ConnectionBar).connected is False
            assert app.is_running

            restarted = start_broker(broker.env, plantd_home, tag="broker2")
            assert await wait_until(pilot, lambda: not banner.display, timeout=15.0)
            assert await wait_until(
                pilot,
                lambda: "org.plantd.test.Stream" in [str(k.value) for k in table.rows],
                timeout=10.0,
            ), "worker did not come back after the broker restart"
    finally:
        await worker.stop()
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task
        if restarted is not None:
            kill_pid(restarted.pid)
