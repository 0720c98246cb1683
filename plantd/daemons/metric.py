"""The metric module daemon ``org.plantd.module.Metric``: produce and consume metric samples.

Producer: host metrics (psutil) and configured signal generators published on the
``metric`` bus. Consumer: keeps the latest and recent samples (SQLite) and answers
``list``/``latest``/``range`` over MDP. Either half can be switched off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantd.config import ConfigError, DaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext
from plantd.metric import SERVICE


@dataclass
class MetricSettings(DaemonSettings):
    """``PLANTD_METRIC_*``."""

    health_port: int = 8085
    endpoint: str = "tcp://127.0.0.1:9797"
    service: str = SERVICE
    heartbeat_interval: float = 2.5
    liveness: int = 3
    metric_frontend: str = "tcp://127.0.0.1:13000"
    metric_backend: str = "tcp://127.0.0.1:13001"
    #: producer: host metrics every ``host_interval`` seconds (0 = off)
    host_interval: float = 5.0
    #: device name of the host metrics (default: the hostname)
    device: str = ""
    disks: list[str] = field(default_factory=lambda: ["/"])
    #: signal generators, e.g. ``"sine period=60 rate=1 amplitude=10 channel=temp units=C"``
    signals: list[str] = field(default_factory=list)
    #: consumer: store samples and serve them over MDP
    consume: bool = True
    database: Path | None = None
    max_age: float = 24 * 3600.0
    max_rows: int = 1_000_000
    flush_interval: float = 0.2
    retention_interval: float = 10.0


class _MetricCollector:
    def __init__(self, store: Any, producer: Any) -> None:
        self.store = store
        self.producer = producer

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.producer is not None:
            for key in ("published", "dropped", "errors"):
                fam = CounterMetricFamily(f"plantd_metric_samples_{key}", f"Samples {key}")
                fam.add_metric([], getattr(self.producer, key))
                yield fam
        if self.store is not None:
            c = self.store.counters()
            for key in ("received", "invalid", "stored"):
                fam = CounterMetricFamily(f"plantd_metric_store_{key}", f"Samples {key}")
                fam.add_metric([], c[key])
                yield fam
            channels = GaugeMetricFamily("plantd_metric_channels", "Known channels")
            channels.add_metric([], c["channels"])
            yield channels


class MetricDaemon(Daemon):
    name = "metric"
    service = SERVICE
    settings_class = MetricSettings
    description = "plantd metric module: host metrics, signal generators, sample store"

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.logger.service import serve_until
        from plantd.metric.producer import MetricProducer
        from plantd.metric.service import make_worker
        from plantd.metric.sources import HostSource, Source, parse_signal
        from plantd.metric.store import MetricStore, MetricStoreSettings

        s: MetricSettings = self.settings  # type: ignore[assignment]
        sources: list[Source] = []
        for spec in s.signals:
            try:
                sources.append(parse_signal(spec))
            except ValueError as exc:
                raise ConfigError(f"PLANTD_METRIC_SIGNALS: {exc}") from None
        if s.host_interval > 0:
            sources.append(HostSource(s.device, rate=1.0 / s.host_interval, disks=s.disks))

        producer = MetricProducer(s.metric_frontend, sources) if sources else None
        store = None
        if s.consume:
            store = MetricStore(
                MetricStoreSettings(
                    path=Path(s.database or ctx.home.data / "metric.sqlite"),
                    backend=s.metric_backend,
                    max_age=s.max_age,
                    max_rows=s.max_rows,
                    flush_interval=s.flush_interval,
                    retention_interval=s.retention_interval,
                )
            )
            await store.start()
        ctx.metrics.register(_MetricCollector(store, producer))
        try:
            if producer is not None:
                producer.start()
                ctx.log.info(
                    "publishing %d source(s) on %s", len(sources), s.metric_frontend
                )
            if store is None:
                ctx.set_ready()
                await ctx.stop.wait()
                return
            worker = make_worker(
                store,
                s.endpoint,
                service=s.service,
                heartbeat_interval=s.heartbeat_interval,
                liveness=s.liveness,
            )

            def registered() -> tuple[str, dict[str, Any]]:
                if worker.connected.is_set():
                    return "pass", {"observedValue": worker.served, "observedUnit": "requests"}
                return "warn", {"output": f"not registered with broker {s.endpoint}"}

            ctx.add_check("metric:worker", registered)
            await serve_until(worker, ctx.stop, on_registered=ctx.set_ready)
        finally:
            if producer is not None:
                await producer.stop()
            if store is not None:
                await store.stop()


DAEMON = MetricDaemon
