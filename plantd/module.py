"""The module SDK: write a plantd module as a class of decorated handlers.

A module is a daemon on the shared lifecycle (config, logging, log bus, health endpoint,
pid file, signals) that serves one MDP service and may publish on and subscribe to the
buses. Everything else is declared::

    from plantd.module import Module, ModuleSettings, every, operation, subscribe

    class Greeter(Module[ModuleSettings]):
        name = "greeter"                        # plant module start greeter
        service = "org.plantd.module.Greeter"   # MDP service name

        @operation("hello")                     # body [b"hello", JSON] -> JSON reply
        async def hello(self, doc: dict) -> dict:
            return {"greeting": f"hello {doc.get('name', 'world')}"}

        @subscribe("state", "org.plantd.")      # every state change under that scope prefix
        async def on_state(self, topic: str, change: dict) -> None:
            self.log.info("changed: %s", change)

        @every(5.0)                             # periodic task, first run after 5 s
        async def tick(self) -> None:
            self.publish("event", "org.plantd.Greeter.tick", {"alive": True})

Installed packages add modules through the ``plantd.modules`` entry-point group
(``greeter = "my_pkg.module:Greeter"``); ``plant module new NAME`` scaffolds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from plantd.config import LOCAL_BROKER, DaemonSettings, Endpoints
from plantd.daemons import ENTRY_POINT_GROUP, installed, load_installed
from plantd.daemons.lifecycle import Daemon, DaemonContext
from plantd.telemetry import FamilyCollector, worker_families
from plantd.vocabulary import MODULE_SERVICE_PREFIX
from plantd.vocabulary import bus as default_bus

__all__ = [
    "ENTRY_POINT_GROUP",
    "Module",
    "ModuleSettings",
    "every",
    "installed",
    "load",
    "operation",
    "subscribe",
]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class ModuleSettings(DaemonSettings):
    """``PLANTD_<MODULE>_*``. Port 0 = an ephemeral health port (recorded in the state file),
    so any number of modules can run side by side without choosing ports."""

    health_port: int = 0
    endpoint: Endpoints = LOCAL_BROKER
    #: MDP service name; empty = the module class's ``service``
    service: str = ""
    heartbeat_interval: float = 2.5
    liveness: int = 3
    # bus frontends (publish) and backends (subscribe); log_bus comes from DaemonSettings
    state_bus: str = default_bus("state").publish
    state_bus_sub: str = default_bus("state").subscribe
    event_bus: str = default_bus("event").publish
    event_bus_sub: str = default_bus("event").subscribe
    metric_bus: str = default_bus("metric").publish
    metric_bus_sub: str = default_bus("metric").subscribe
    log_bus_sub: str = default_bus("log").subscribe


def operation(name: str, *, raw: bool = False) -> Callable[[F], F]:
    """Serve MDP operation ``name`` with this method (see ``Worker.operation``)."""

    def mark(fn: F) -> F:
        fn.__plantd_operation__ = (name, raw)  # type: ignore[attr-defined]
        return fn

    return mark


def subscribe(bus: str, topic: str = "") -> Callable[[F], F]:
    """Call this method with ``(topic, document)`` for every message on ``bus`` under ``topic``."""

    def mark(fn: F) -> F:
        fn.__plantd_subscribe__ = (bus, topic)  # type: ignore[attr-defined]
        return fn

    return mark


def every(seconds: float) -> Callable[[F], F]:
    """Run this method every ``seconds`` (the next run is scheduled after one finishes)."""

    def mark(fn: F) -> F:
        fn.__plantd_every__ = float(seconds)  # type: ignore[attr-defined]
        return fn

    return mark


ModuleSettingsT = TypeVar("ModuleSettingsT", bound=ModuleSettings)


class Module(Daemon[ModuleSettingsT]):
    """Base class of plantd modules. Subclasses set ``name`` and ``service`` and decorate.

    A module with its own settings names them twice: ``class Valve(Module[ValveSettings])``
    (typed ``self.settings``) and ``settings_class = ValveSettings`` (what is loaded).
    """

    settings_class: ClassVar[type[DaemonSettings]] = ModuleSettings
    #: how long startup waits for the broker before reporting ready anyway (health "fail")
    connect_grace: ClassVar[float] = 3.0

    def __init__(self, settings: ModuleSettingsT) -> None:
        super().__init__(settings)
        self.started = time.monotonic()
        self._publishers: dict[str, Any] = {}
        self.ctx: DaemonContext | None = None

    def service_name(self) -> str:
        configured = str(getattr(self.settings, "service", "") or "")
        return configured or self.service or MODULE_SERVICE_PREFIX + self.name.capitalize()

    # --- hooks for subclasses ---------------------------------------------------------

    async def setup(self) -> None:
        """Open resources before serving (databases, devices). ``self.ctx`` is set."""

    async def teardown(self) -> None:
        """Release what :meth:`setup` opened; runs on every stop."""

    def health(self) -> dict[str, Any]:
        """Extra fields for the ``health`` operation."""
        return {}

    def serves(self) -> bool:
        """Whether to register the MDP service. False makes a publish-only instance (no
        worker, ready at once), e.g. a metric producer on each host beside one consumer that
        answers the queries: a producer registered under the same service would get requests
        it cannot answer."""
        return True

    def collect(self) -> Iterable[Any]:
        """Prometheus metric families for ``/metrics``, built on every scrape from counters the
        module keeps anyway, so the hot path updates no metric objects. Called after setup()."""
        return ()

    # --- helpers for subclasses -------------------------------------------------------

    @property
    def log(self) -> Any:
        assert self.ctx is not None, "the module is not running"
        return self.ctx.log

    def publish(self, bus: str, topic: str, doc: Any) -> bool:
        """Publish ``doc`` on ``bus`` (state/event/metric/log); never blocks."""
        pub = self._publishers.get(bus)
        if pub is None:
            from plantd.client import Publisher

            pub = self._publishers[bus] = Publisher(self._bus_endpoint(bus, sub=False))
        return bool(pub.publish_nowait(topic, doc))

    def _bus_endpoint(self, bus: str, *, sub: bool) -> str:
        field_name = f"{bus}_bus_sub" if sub else f"{bus}_bus"
        value = getattr(self.settings, field_name, None)
        if not value:
            raise ValueError(f"unknown bus {bus!r} (state, event, metric, log)")
        return str(value)

    # --- the lifecycle ----------------------------------------------------------------

    def _handlers(self, marker: str) -> list[tuple[Any, Callable[..., Any]]]:
        found = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            spec = getattr(fn, marker, None)
            if spec is not None:
                found.append((spec, getattr(self, attr)))
        return found

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.client import Worker
        from plantd.client.worker import registration_health

        self.ctx = ctx
        s = self.settings
        service = self.service_name()
        worker = Worker(
            s.endpoint, service, heartbeat_interval=s.heartbeat_interval, liveness=s.liveness
        )
        for (op, raw), handler in self._handlers("__plantd_operation__"):
            worker.add_operation(op, handler, raw=raw)
        if "health" not in worker.operations:
            worker.add_operation("health", self._health_operation(worker))

        def registered() -> tuple[str, dict[str, Any]]:
            return registration_health([worker])

        serving = self.serves()
        if serving:
            ctx.add_check(f"{self.name}:worker", registered)
        await self.setup()
        if ctx.metrics is not None and type(self).collect is not Module.collect:
            ctx.metrics.register(FamilyCollector(self.collect))
        if ctx.metrics is not None and serving:
            ctx.metrics.register(FamilyCollector(lambda: worker_families([worker.stats])))
        tasks = [asyncio.create_task(worker.run(), name=f"{self.name}.worker")] if serving else []
        for (bus, topic), handler in self._handlers("__plantd_subscribe__"):
            tasks.append(asyncio.create_task(self._subscription(bus, topic, handler)))
        for seconds, handler in self._handlers("__plantd_every__"):
            tasks.append(asyncio.create_task(self._periodic(seconds, handler)))
        # `plant module start && plant call` must not race the READY; without a broker we
        # still come up and keep reconnecting (health "warn" with some of its brokers,
        # "fail" with none)
        if serving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.connected.wait(), self.connect_grace)
        ctx.set_ready()
        if serving:
            ctx.log.info("%s serving %s via %s", self.name, service, s.endpoint)
        else:
            ctx.log.info("%s running without an MDP service", self.name)
        stop = asyncio.create_task(ctx.stop.wait())
        try:
            done, _ = await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stop and not t.cancelled() and t.exception()]
        finally:
            stop.cancel()
            await worker.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pub in self._publishers.values():
                pub.close()
            self._publishers.clear()
            await self.teardown()
        if failed:
            raise failed[0].exception()  # type: ignore[misc]

    def _health_operation(self, worker: Any) -> Callable[[Any], Any]:
        async def health(_doc: Any) -> dict[str, Any]:
            return {
                "status": "pass",
                "service": self.service_name(),
                "operations": worker.operations,
                "served": worker.served,
                "uptime_s": round(time.monotonic() - self.started, 3),
                **self.health(),
            }

        return health

    async def _subscription(self, bus: str, topic: str, handler: Callable[..., Any]) -> None:
        from plantd.client import Subscriber

        sub = Subscriber(self._bus_endpoint(bus, sub=True), topics=[topic])
        try:
            async for msg_topic, doc in sub:
                try:
                    result = handler(msg_topic, doc)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self.log.exception("%s: subscriber %s failed", self.name, handler.__name__)
        finally:
            sub.close()

    async def _periodic(self, seconds: float, handler: Callable[..., Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = handler()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.log.exception("%s: periodic %s failed", self.name, handler.__name__)


def load(name: str) -> type[Module[Any]]:
    """The Module class registered as ``name`` in the ``plantd.modules`` entry points."""
    cls = load_installed(name)
    if not issubclass(cls, Module):
        raise TypeError(f"entry point {name} = {installed()[name]} is not a plantd Module")
    return cls
