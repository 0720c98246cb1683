"""The broker daemon: the Majordomo ROUTER plus the four pub/sub bus proxies.

Defaults bind 127.0.0.1 only; listening on every interface has to be asked for explicitly
(``PLANTD_BROKER_ENDPOINT=tcp://*:9797``), and is refused without security (CURVE + ZAP, see
docs/security.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

from plantd.broker.settings import BrokerDaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext
from plantd.telemetry import OTHER, Latency, request_families
from plantd.vocabulary import BUS_NAMES

__all__ = ["BUS_NAMES", "BrokerDaemon", "BrokerDaemonSettings"]


#: HELP of each ``Counters`` field (``plantd_broker_<name>_total``)
COUNTER_HELP = {
    "requests": "Client requests received (MDP, RFC 18 and MMI)",
    "replies": "Final replies relayed from workers to clients",
    "partials": "Partial (streamed) reply parts relayed from workers to clients",
    "errors": "Error replies the broker itself sent to clients",
    "malformed": "Messages dropped as malformed",
    "oversized": "Messages over the broker's message size limit",
    "disconnects_sent": "DISCONNECT commands sent to workers",
    "workers_expired": "Workers removed after missing their heartbeats",
    "requests_expired": "Requests that waited too long for a worker",
    "denied": "Messages refused by authorization (status 403 or DISCONNECT)",
    "rate_limited": "Requests refused because their principal was over its rate (status 429)",
    "unroutable": "Requests for a service name that cannot be routed",
    "mmi": "MMI (mmi.*) requests answered by the broker",
    "queue_full": "Requests refused or dropped because their service's queue was full",
    "requests_dropped": "Requests ended without any reply (no error reply possible in time)",
    "lost_mid_request": "Requests whose worker died, disconnected or expired while serving",
    "oversized_replies": "Worker replies over the size limit (the client got an error)",
    "backlogged": "Messages held because the peer's pipe was full (sent later)",
    "replies_dropped": "Client-bound messages finally not delivered",
    "worker_sends_dropped": "Worker-bound messages finally not delivered",
}


def service_problems(core: Any, now: float) -> list[str]:
    """What makes a service unable to serve right now, one line each (health ``warn``):

    * stalled: requests wait, no worker is idle and none completed a request for
      ``request_timeout`` (the point where the broker starts answering them with errors);
    * wedged: a busy worker silent past the heartbeat deadline (one that never heartbeats
      while busy is only expired after ``busy_timeout``: until then it holds its request).
    """
    s = core.settings
    silence = s.heartbeat_interval * s.heartbeat_liveness
    problems = []
    for svc in core.services.values():
        name = svc.name.decode("utf-8", "replace")
        if not svc.ever_ready:
            continue  # a name only clients asked for: their requests expire, nothing to fix
        if svc.queue and not svc.idle and _stalled_since(svc) < now - s.request_timeout:
            busy = sum(w.busy is not None for w in svc.workers.values())
            problems.append(
                f"{name}: {len(svc.queue)} requests waiting, {busy} of {len(svc.workers)}"
                f" workers busy, none finished for {s.request_timeout:g}s"
            )
        for worker in svc.workers.values():
            if worker.busy is not None and now - worker.last_seen > silence:
                problems.append(
                    f"{name}: a worker busy for {now - worker.busy_since:.1f}s has been silent"
                    f" for {now - worker.last_seen:.1f}s"
                )
    return problems


def _stalled_since(svc: Any) -> float:
    """The last completion, or the arrival of the oldest waiting request if later (the head
    of each fair-queue lane is its oldest; a bounded look is enough for a health check)."""
    oldest = min(r.arrival for r in itertools.islice(svc.queue, 1000))
    return float(max(svc.last_progress, oldest))


def service_label(service: Any) -> str:
    """A service's label value: its name once a worker registered it, else :data:`OTHER`
    (names from clients alone, typos included, must not each become a series)."""
    return service.name.decode("utf-8", "replace") if service.ever_ready else OTHER


class _BrokerCollector:
    """Prometheus collector reading the core on scrape: no timers, never stale."""

    def __init__(self, server: Any, proxies: list[Any]) -> None:
        self.server = server
        self.proxies = proxies

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families come from collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        core = self.server.core
        for name, value in dataclasses.asdict(core.counters).items():
            yield CounterMetricFamily(
                f"plantd_broker_{name}", COUNTER_HELP.get(name, f"Broker {name}"), value=value
            )
        yield GaugeMetricFamily(
            "plantd_broker_services", "Services the broker knows", value=len(core.services)
        )
        yield GaugeMetricFamily(
            "plantd_broker_workers", "Workers registered now", value=len(core.workers)
        )
        queued = GaugeMetricFamily(
            "plantd_broker_queued_requests", "Requests waiting for a worker", labels=["service"]
        )
        idle = GaugeMetricFamily(
            "plantd_broker_idle_workers", "Idle workers per service", labels=["service"]
        )
        waiting: dict[str, int] = {}
        idling: dict[str, int] = {}
        latency: dict[str, Latency] = {}
        failed: dict[str, int] = {}
        for svc in core.services.values():
            label = service_label(svc)
            waiting[label] = waiting.get(label, 0) + len(svc.queue)
            idling[label] = idling.get(label, 0) + len(svc.idle)
            latency.setdefault(label, Latency()).merge(svc.latency)
            failed[label] = failed.get(label, 0) + svc.failed
        for label in sorted(waiting):
            queued.add_metric([label], waiting[label])
            idle.add_metric([label], idling[label])
        yield queued
        yield idle
        yield from request_families(
            "plantd_broker_service",
            "service",
            latency,
            "Requests workers completed, arrival to final reply",
            errors=failed,
        )
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
        if self.proxies:
            yield from _bus_families(self.proxies)


async def _drain_bus_monitors(proxies: list[Any], interval: float = 5.0) -> None:
    """Read the proxies' connection events now and then, scraped or not (bounded memory)."""
    while True:
        await asyncio.sleep(interval)
        for proxy in proxies:
            proxy.connections()


def _bus_families(proxies: list[Any]) -> Iterator[Any]:
    """``plantd_bus_*{bus}``: messages through each proxy and who is connected to it."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    stats = {p.name: p.statistics() for p in proxies}
    conns = {p.name: p.connections() for p in proxies}
    for key, help_text in (
        ("published", "Messages publishers sent into the bus"),
        ("delivered", "Messages the bus passed on to its subscribers' connections"),
    ):
        messages = CounterMetricFamily(f"plantd_bus_{key}_messages", help_text, labels=["bus"])
        volume = CounterMetricFamily(
            f"plantd_bus_{key}_bytes",
            help_text.replace("Messages", "Bytes of messages"),
            labels=["bus"],
        )
        for name, st in stats.items():
            if st:
                messages.add_metric([name], st[key])
                volume.add_metric([name], st[f"{key}_bytes"])
        yield messages
        yield volume
    for attr, metric, help_text in (
        ("denied_publish", "denied_published_messages", "Published messages the policy refused"),
        ("denied_subscribe", "denied_subscriptions", "Subscriptions the policy refused"),
        ("evicted", "evicted_subscribers", "Subscriber connections cut after a revocation"),
    ):
        counter = CounterMetricFamily(f"plantd_bus_{metric}", help_text, labels=["bus"])
        for proxy in proxies:
            counter.add_metric([proxy.name], getattr(proxy, attr))
        yield counter
    for side in ("publishers", "subscribers"):
        gauge = GaugeMetricFamily(
            f"plantd_bus_{side}", f"Connections of {side} to the bus now", labels=["bus"]
        )
        for name, c in conns.items():
            gauge.add_metric([name], c[side])
        yield gauge


class _GuardCollector:
    """Counters of the broker's security (denial audit queue) for /metrics."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        audit = self.guard.audit
        for name, text in (
            ("written", "Denials written to the audit log"),
            ("dropped", "Denials not audited because the audit queue was full"),
            ("failed", "Denials whose audit write failed"),
        ):
            yield CounterMetricFamily(
                f"plantd_broker_denials_audit_{name}", text, value=getattr(audit, name)
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
        monitors: asyncio.Task[None] | None = None
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
            ctx.metrics.register(_BrokerCollector(server, proxies))
            self._add_checks(ctx, server, proxies, s)

            if proxies:
                monitors = asyncio.create_task(_drain_bus_monitors(proxies), name="bus.monitors")
            task = asyncio.create_task(server.run(ctx.stop), name="broker.server")
            ready = asyncio.create_task(server.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not task.done():
                ctx.set_ready()
            await task
        finally:
            if monitors is not None:
                monitors.cancel()
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

        def services() -> tuple[str, dict[str, Any]]:
            problems = service_problems(core, time.monotonic())
            if problems:
                return "warn", {"output": "; ".join(problems[:5]), "services": len(problems)}
            return "pass", {"observedValue": len(core.services), "observedUnit": "services"}

        ctx.add_check("broker:router", router)
        ctx.add_check("broker:services", services)
        ctx.add_check("broker:workers", workers)
        ctx.add_check("broker:queue", queue)
        if s.buses:
            ctx.add_check("broker:buses", buses)


DAEMON = BrokerDaemon
