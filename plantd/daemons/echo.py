"""The echo module daemon: a worker that returns request bodies unchanged.

It exists to prove the whole path (client -> broker -> worker -> client) end to end and to
give benchmarks and smoke tests a service whose cost is only the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from plantd.config import DaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext

SERVICE = "org.plantd.module.Echo"


@dataclass
class EchoSettings(DaemonSettings):
    """``PLANTD_ECHO_*``: which broker to serve and how to heartbeat it."""

    health_port: int = 8084
    endpoint: str = "tcp://127.0.0.1:9797"
    service: str = SERVICE
    heartbeat_interval: float = 2.5
    liveness: int = 3


class EchoDaemon(Daemon):
    name = "echo"
    settings_class = EchoSettings
    description = "plantd echo module"
    service = SERVICE

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.client import Worker

        s: EchoSettings = self.settings  # type: ignore[assignment]
        worker = Worker(
            s.endpoint, s.service, heartbeat_interval=s.heartbeat_interval, liveness=s.liveness
        )
        started = time.monotonic()

        @worker.operation("echo", raw=True)
        async def echo(body: list[bytes]) -> list[bytes]:
            return body

        @worker.operation("health")
        async def health(_payload: Any) -> dict[str, Any]:
            return {
                "status": "pass",
                "service": s.service,
                "served": worker.served,
                "uptime_s": round(time.monotonic() - started, 3),
            }

        def registered() -> tuple[str, dict[str, Any]]:
            if worker.connected.is_set():
                return "pass", {"observedValue": worker.served, "observedUnit": "requests"}
            return "warn", {"output": f"not registered with broker {s.endpoint}"}

        ctx.add_check("echo:worker", registered)
        task = asyncio.create_task(worker.run(), name="echo.worker")
        # give registration a moment so `plant up && plant call` does not race the READY;
        # without a broker we still come up (health "warn") and keep reconnecting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.connected.wait(), 3.0)
        ctx.set_ready()
        ctx.log.info("echo serving %s via %s", s.service, s.endpoint)
        stop = asyncio.create_task(ctx.stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                await worker.stop()
                done, _ = await asyncio.wait({task}, timeout=5.0)
                if not done:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


DAEMON = EchoDaemon
