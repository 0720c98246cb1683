"""The metric module ``org.plantd.module.Metric``: produce and consume metric samples.

Producer: host metrics (psutil) and configured signal generators published on the
``metric`` bus. Consumer: keeps the latest and recent samples (SQLite) and answers
``list``/``latest``/``range`` over MDP. Either half can be switched off; without the consumer
no MDP service is registered. Written with the module SDK, like ``echo``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantd.config import ConfigError
from plantd.metric import SERVICE
from plantd.metric.producer import MetricProducer
from plantd.metric.sources import HostSource, Source, parse_signal
from plantd.metric.store import MetricStore, MetricStoreSettings
from plantd.module import Module, ModuleSettings, operation
from plantd.protocol.envelope import ok
from plantd.storage.paging import QueryError, invalid_argument, serve_pages
from plantd.vocabulary import HEALTH_PORTS


@dataclass
class MetricSettings(ModuleSettings):
    """``PLANTD_METRIC_*``; publishes on ``metric_bus``, consumes ``metric_bus_sub``."""

    health_port: int = HEALTH_PORTS["metric"]
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


def _filter(doc: Any, name: str) -> str | None:
    value = doc.get(name) if isinstance(doc, dict) else None
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise QueryError(f"{name}: expected a string", name)
    return value


class MetricModule(Module[MetricSettings]):
    name = "metric"
    service = SERVICE
    settings_class = MetricSettings
    description = "plantd metric module: host metrics, signal generators, sample store"

    producer: MetricProducer | None = None
    store: MetricStore | None = None

    @property
    def _settings(self) -> MetricSettings:
        return self.settings

    def serves(self) -> bool:
        return self._settings.consume

    async def setup(self) -> None:
        s = self._settings
        sources: list[Source] = []
        for spec in s.signals:
            try:
                sources.append(parse_signal(spec))
            except ValueError as exc:
                raise ConfigError(f"PLANTD_METRIC_SIGNALS: {exc}") from None
        if s.host_interval > 0:
            sources.append(HostSource(s.device, rate=1.0 / s.host_interval, disks=s.disks))
        if s.consume:
            assert self.ctx is not None
            self.store = MetricStore(
                MetricStoreSettings(
                    path=Path(s.database or self.ctx.home.data / "metric.sqlite"),
                    backend=s.metric_bus_sub,
                    max_age=s.max_age,
                    max_rows=s.max_rows,
                    flush_interval=s.flush_interval,
                    retention_interval=s.retention_interval,
                )
            )
            await self.store.start()
        if sources:
            self.producer = MetricProducer(s.metric_bus, sources)
            self.producer.start()
            self.log.info("publishing %d source(s) on %s", len(sources), s.metric_bus)

    async def teardown(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.store is not None:
            await self.store.stop()

    # operations are only registered when consuming, so ``self.store`` is set in each

    @operation("list")
    async def list_channels(self, doc: Any) -> dict[str, Any]:
        assert self.store is not None
        try:
            page = self.store.channel_page(doc if isinstance(doc, dict) else {})
        except QueryError as exc:
            return invalid_argument(exc)
        page["channels"] = [self.store.channel_row(d) for d in page.pop("items")]
        return ok(page)

    @operation("latest")
    async def latest(self, doc: Any) -> dict[str, Any]:
        assert self.store is not None
        try:
            device, channel = _filter(doc, "device"), _filter(doc, "channel")
            page = self.store.channel_page(doc if isinstance(doc, dict) else {}, device, channel)
        except QueryError as exc:
            return invalid_argument(exc)
        page["samples"] = page.pop("items")
        return ok(page)

    @operation("range")
    async def sample_range(self, doc: Any) -> AsyncIterator[dict[str, Any]]:
        """One page; with ``stream: true`` every page (PARTIAL replies), up to ``max_records``."""
        assert self.store is not None
        store = self.store
        async for reply in serve_pages(
            doc, store.range_page, lambda params, total: store.range_pages(params, total=total)
        ):
            yield reply

    def health(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        counters = self.store.counters()
        warn = counters["dropped"] or counters["failed"]
        return {"status": "warn" if warn else "pass", "ingest": counters}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.producer is not None:
            for key, text in (
                ("published", "Samples published on the metric bus"),
                ("dropped", "Samples the bus publisher dropped (its queue was full)"),
                ("errors", "Sampling rounds of a source that failed"),
            ):
                yield CounterMetricFamily(
                    f"plantd_metric_samples_{key}", text, value=getattr(self.producer, key)
                )
        if self.store is not None:
            c = self.store.counters()
            for key, text in (
                ("received", "Samples received from the metric bus"),
                ("invalid", "Samples refused (no device/channel, non-numeric or non-finite)"),
                ("stored", "Samples written to the sample database"),
            ):
                yield CounterMetricFamily(f"plantd_metric_store_{key}", text, value=c[key])
            yield GaugeMetricFamily(
                "plantd_metric_channels",
                "Distinct (device, channel) pairs seen",
                value=c["channels"],
            )


DAEMON = MetricModule
