"""The logger daemon ``org.plantd.Logger``: stores the log and event buses, serves queries.

Runs on the shared lifecycle: the store (:mod:`plantd.logger.store`), its MDP worker
(:mod:`plantd.logger.service`) and, when ``PLANTD_LOGGER_LOKI_URL`` is set, the Loki forwarder
(:mod:`plantd.logger.loki`). Ingestion counters are exported on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.config import DaemonSettings
from plantd.daemons.lifecycle import Daemon, DaemonContext
from plantd.logger import SERVICE


@dataclass
class LoggerSettings(DaemonSettings):
    """``PLANTD_LOGGER_*``."""

    health_port: int = 8083
    endpoint: str = "tcp://127.0.0.1:9797"
    service: str = SERVICE
    heartbeat_interval: float = 2.5
    liveness: int = 3
    #: bus backends to store ("" disables one)
    log_backend: str = "tcp://127.0.0.1:14001"
    event_backend: str = "tcp://127.0.0.1:12001"
    #: alias of ``log_bus`` (where this daemon publishes its own records), if set
    log_frontend: str = ""
    #: SQLite file (default ``$PLANTD_HOME/data/logger.sqlite``)
    database: Path | None = None
    #: retention: seconds (0 = forever) and rows (0 = unlimited)
    max_age: float = 7 * 24 * 3600.0
    max_rows: int = 1_000_000
    retention_interval: float = 5.0
    #: batched inserts: every N records or T seconds, whichever first
    flush_records: int = 2000
    flush_interval: float = 0.05
    max_pending: int = 200_000
    #: Grafana Loki push (base URL or full /loki/api/v1/push URL); empty = off
    loki_url: str = ""
    loki_tenant: str = ""
    loki_batch_size: int = 1000
    loki_batch_wait: float = 1.0
    loki_max_queue: int = 50_000
    loki_timeout: float = 5.0


class _LoggerCollector:
    """Prometheus collector reading the store's counters on scrape."""

    def __init__(self, store: Any, forwarder: Any) -> None:
        self.store = store
        self.forwarder = forwarder

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.store.counters()
        for key in ("received", "invalid", "stored", "dropped", "failed", "trimmed"):
            fam = CounterMetricFamily(f"plantd_logger_records_{key}", f"Log records {key}")
            fam.add_metric([], c[key])
            yield fam
        missed = CounterMetricFamily(
            "plantd_logger_records_missed", "Records lost before reaching the logger (seq gaps)"
        )
        missed.add_metric([], sum(p.missed for p in self.store.producers.values()))
        yield missed
        pending = GaugeMetricFamily("plantd_logger_pending", "Records waiting to be written")
        pending.add_metric([], c["pending"])
        yield pending
        if self.forwarder is not None:
            f = self.forwarder.counters()
            for key in ("sent", "dropped", "failed", "retries"):
                fam = CounterMetricFamily(f"plantd_logger_loki_{key}", f"Loki records {key}")
                fam.add_metric([], f[key])
                yield fam
            queued = GaugeMetricFamily("plantd_logger_loki_queued", "Records queued for Loki")
            queued.add_metric([], f["queued"])
            yield queued


class LoggerDaemon(Daemon):
    name = "logger"
    service = SERVICE
    settings_class = LoggerSettings
    description = "plantd logger: stores the log and event buses"

    def log_bus_endpoint(self) -> str | None:
        s: LoggerSettings = self.settings  # type: ignore[assignment]
        default = super().log_bus_endpoint()
        if default is None:  # log_bus explicitly off
            return None
        return s.log_frontend.strip() or default

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.logger.loki import LokiForwarder
        from plantd.logger.service import make_worker, serve_until
        from plantd.logger.store import LogStore, StoreSettings

        s: LoggerSettings = self.settings  # type: ignore[assignment]
        path = s.database or ctx.home.data / "logger.sqlite"
        store = LogStore(
            StoreSettings(
                path=Path(path),
                log_backend=s.log_backend or None,
                event_backend=s.event_backend or None,
                max_age=s.max_age,
                max_rows=s.max_rows,
                flush_records=s.flush_records,
                flush_interval=s.flush_interval,
                max_pending=s.max_pending,
                retention_interval=s.retention_interval,
            )
        )
        forwarder: LokiForwarder | None = None
        if s.loki_url.strip():
            forwarder = LokiForwarder(
                s.loki_url,
                batch_size=s.loki_batch_size,
                batch_wait=s.loki_batch_wait,
                max_queue=s.loki_max_queue,
                timeout=s.loki_timeout,
                tenant=s.loki_tenant or None,
            )
        await store.start()
        try:
            if forwarder is not None:
                await forwarder.start()
                store.listeners.append(forwarder.offer)
                ctx.log.info("forwarding to Loki at %s", forwarder.url)
            worker = make_worker(
                store,
                s.endpoint,
                service=s.service,
                heartbeat_interval=s.heartbeat_interval,
                liveness=s.liveness,
                extra_health=(lambda: {"loki": forwarder.counters()}) if forwarder else None,
            )
            ctx.metrics.register(_LoggerCollector(store, forwarder))

            def registered() -> tuple[str, dict[str, Any]]:
                if worker.connected.is_set():
                    return "pass", {"observedValue": worker.served, "observedUnit": "requests"}
                return "warn", {"output": f"not registered with broker {s.endpoint}"}

            def ingest() -> tuple[str, dict[str, Any]]:
                c = store.counters()
                status = "warn" if c["dropped"] or c["failed"] else "pass"
                return status, {"observedValue": c["stored"], "observedUnit": "records", **c}

            ctx.add_check("logger:worker", registered)
            ctx.add_check("logger:ingest", ingest)
            if forwarder is not None:
                ctx.add_check(
                    "logger:loki",
                    lambda: ("warn" if forwarder.failed or forwarder.dropped else "pass",
                             forwarder.counters()),
                )

            def ready() -> None:
                ctx.set_ready()
                ctx.log.info(
                    "logger storing %s in %s, serving %s via %s",
                    ", ".join(b for b in (s.log_backend, s.event_backend) if b),
                    path,
                    s.service,
                    s.endpoint,
                )

            await serve_until(worker, ctx.stop, on_registered=ready)
        finally:
            await store.stop()  # flushes the last batch, which also goes to the forwarder
            if forwarder is not None:
                await forwarder.stop()


DAEMON = LoggerDaemon
