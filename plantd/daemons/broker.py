"""The broker daemon: the Majordomo ROUTER plus the four pub/sub bus proxies.

Defaults bind 127.0.0.1 only; listening on every interface has to be asked for explicitly
(``PLANTD_BROKER_ENDPOINT=tcp://*:9797``) because the broker has no authentication.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plantd.config import DaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext

BUS_NAMES = ("state", "event", "metric", "log")


@dataclass
class BrokerDaemonSettings(DaemonSettings):
    """Broker tunables (``PLANTD_BROKER_*``); the first block mirrors ``BrokerSettings``."""

    health_port: int = 8081
    endpoint: str = "tcp://127.0.0.1:9797"
    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    busy_timeout: float = 30.0
    #: queue expiry while the service makes no progress; below the Guide's 2.5 s and our
    #: clients' 5 s timeouts so an RFC 18 caller gets the broker's precise answer (unknown
    #: service / no worker / all busy) in time, never after it gave up
    request_timeout: float = 2.0
    #: the longest a request is held (a queue that keeps moving; dialects without errors)
    max_wait: float = 60.0
    max_queue_bytes: int = 64 << 20
    max_client_queue_bytes: int = 32 << 20
    max_queue: int = 1_000_000
    max_backlog_bytes: int = 64 << 20
    max_message_bytes: int = 1 << 20
    #: run the bus proxies in this process (disable to run a bare broker)
    buses: bool = True
    state_frontend: str = "tcp://127.0.0.1:11000"
    state_backend: str = "tcp://127.0.0.1:11001"
    event_frontend: str = "tcp://127.0.0.1:12000"
    event_backend: str = "tcp://127.0.0.1:12001"
    metric_frontend: str = "tcp://127.0.0.1:13000"
    metric_backend: str = "tcp://127.0.0.1:13001"
    log_frontend: str = "tcp://127.0.0.1:14000"
    log_backend: str = "tcp://127.0.0.1:14001"

    def bus_endpoints(self, bus: str) -> tuple[str, str]:
        """(frontend, backend) of ``bus``: publishers connect to one, subscribers to the other."""
        if bus not in BUS_NAMES:
            raise ValueError(f"unknown bus {bus!r} (known: {', '.join(BUS_NAMES)})")
        return getattr(self, f"{bus}_frontend"), getattr(self, f"{bus}_backend")


class _BrokerCollector:
    """Prometheus collector reading the core on scrape: no timers, never stale."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families come from collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        core = self.server.core
        for name, value in dataclasses.asdict(core.counters).items():
            yield CounterMetricFamily(
                f"plantd_broker_{name}", f"Broker counter {name}", value=value
            )
        yield GaugeMetricFamily(
            "plantd_broker_services", "Known services", value=len(core.services)
        )
        yield GaugeMetricFamily(
            "plantd_broker_workers", "Connected workers", value=len(core.workers)
        )
        queued = GaugeMetricFamily(
            "plantd_broker_queued_requests", "Requests waiting for a worker", labels=["service"]
        )
        idle = GaugeMetricFamily(
            "plantd_broker_idle_workers", "Idle workers per service", labels=["service"]
        )
        for svc in core.services.values():
            label = svc.name.decode("utf-8", "replace")
            queued.add_metric([label], len(svc.queue))
            idle.add_metric([label], len(svc.idle))
        yield queued
        yield idle
        yield GaugeMetricFamily(
            "plantd_broker_queued_bytes",
            "Bytes of requests waiting for a worker",
            value=sum(svc.queue.bytes for svc in core.services.values()),
        )
        yield GaugeMetricFamily(
            "plantd_broker_backlog_bytes",
            "Bytes held for peers whose pipe is full",
            value=self.server.backlog.bytes,
        )


class BrokerDaemon(Daemon[BrokerDaemonSettings]):
    name = "broker"
    settings_class = BrokerDaemonSettings
    description = "plantd Majordomo broker and message buses"

    def log_bus_endpoint(self) -> str | None:
        """The broker publishes its own logs into its own log bus (if it runs the buses)."""
        s = self.settings
        if not s.buses or super().log_bus_endpoint() is None:
            return None
        return s.log_frontend

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.broker.bus import BusProxy
        from plantd.broker.core import BrokerSettings
        from plantd.broker.server import BrokerServer

        s = self.settings
        wanted = {f.name for f in dataclasses.fields(BrokerSettings)}
        core_settings = BrokerSettings(**{k: getattr(s, k) for k in wanted if hasattr(s, k)})
        server = BrokerServer(core_settings)
        bound = server.bind()  # raise bind errors now, before announcing readiness
        ctx.set_endpoint(bound)

        proxies: list[Any] = []
        try:
            if s.buses:
                for bus in BUS_NAMES:
                    proxy = BusProxy(bus, *s.bus_endpoints(bus))
                    proxy.start()
                    proxies.append(proxy)
            ctx.metrics.register(_BrokerCollector(server))
            self._add_checks(ctx, server, proxies, s)

            task = asyncio.create_task(server.run(ctx.stop), name="broker.server")
            ready = asyncio.create_task(server.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not task.done():
                ctx.set_ready()
            await task
        finally:
            for proxy in proxies:
                await asyncio.to_thread(proxy.stop)

    @staticmethod
    def _add_checks(
        ctx: DaemonContext, server: Any, proxies: list[Any], s: BrokerDaemonSettings
    ) -> None:
        core = server.core

        def router() -> tuple[str, dict[str, Any]]:
            if not server.ready.is_set():
                return "fail", {"output": "router not serving"}
            return "pass", {"observedValue": server.bound_endpoint}

        def workers() -> tuple[str, dict[str, Any]]:
            return "pass", {"observedValue": len(core.workers), "observedUnit": "workers"}

        def queue() -> tuple[str, dict[str, Any]]:
            deepest = max((svc.queue.bytes for svc in core.services.values()), default=0)
            status = "warn" if deepest >= 0.8 * s.max_queue_bytes else "pass"
            return status, {"observedValue": deepest, "observedUnit": "bytes"}

        def buses() -> tuple[str, dict[str, Any]]:
            dead = [p.name for p in proxies if not p.alive]
            if dead:
                return "fail", {"output": f"bus proxy stopped: {', '.join(dead)}"}
            return "pass", {"observedValue": len(proxies), "observedUnit": "buses"}

        ctx.add_check("broker:router", router)
        ctx.add_check("broker:workers", workers)
        ctx.add_check("broker:queue", queue)
        if s.buses:
            ctx.add_check("broker:buses", buses)


DAEMON = BrokerDaemon
