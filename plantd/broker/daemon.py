"""The broker daemon: the Majordomo ROUTER plus the four pub/sub bus proxies.

Defaults bind 127.0.0.1 only; listening on every interface has to be asked for explicitly
(``PLANTD_BROKER_ENDPOINT=tcp://*:9797``), and is refused without security (CURVE + ZAP, see
docs/security.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

from plantd.broker.settings import BrokerDaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext
from plantd.vocabulary import BUS_NAMES

__all__ = ["BUS_NAMES", "BrokerDaemon", "BrokerDaemonSettings"]


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


class _GuardCollector:
    """Counters of the broker's security (denial audit queue) for /metrics."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        audit = self.guard.audit
        for name in ("written", "dropped", "failed"):
            yield CounterMetricFamily(
                f"plantd_broker_denials_audit_{name}",
                f"Audit rows of denials {name}",
                value=getattr(audit, name),
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
        import zmq

        from plantd.broker.bus import BusProxy
        from plantd.broker.core import BrokerSettings
        from plantd.broker.guard import BrokerGuard
        from plantd.broker.server import BrokerServer
        from plantd.daemons.lifecycle import StartupRefused
        from plantd.security.errors import IdentityError
        from plantd.security.settings import server_security

        s = self.settings
        wanted = {f.name for f in dataclasses.fields(BrokerSettings)}
        core_settings = BrokerSettings(**{k: getattr(s, k) for k in wanted if hasattr(s, k)})
        security = server_security()
        guard = None
        if security.secure:  # one authenticator for the ROUTER and the four buses
            guard = BrokerGuard(
                security, zmq.Context(), rate_limit=s.rate_limit, rate_burst=s.rate_burst
            )
            guard.start()
            ctx.metrics.register(_GuardCollector(guard))
        server = BrokerServer(core_settings, security=security, guard=guard)
        proxies: list[Any] = []
        try:
            try:
                bound = server.bind()  # raise bind errors now, before announcing readiness
                ctx.set_endpoint(bound)
                if s.buses:
                    for bus in BUS_NAMES:
                        proxy = BusProxy(bus, *s.bus_endpoints(bus), security=security, guard=guard)
                        proxy.start()
                        proxies.append(proxy)
            except IdentityError as exc:  # a public endpoint without security
                raise StartupRefused(str(exc), exc.exit_code) from None
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
            if guard is not None:
                guard.stop()
                guard.context.destroy(linger=0)

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
