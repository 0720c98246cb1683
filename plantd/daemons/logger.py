"""The logger daemon ``org.plantd.Logger``: stores the log and event buses, serves queries.

A module on the SDK: the store (:mod:`plantd.logger.store`) ingests the ``log_bus_sub`` and
``event_bus_sub`` backends from ``setup()`` until ``teardown()``, the ``query``/``stats``/
``health`` operations answer from it and, when ``PLANTD_LOGGER_LOKI_URL`` is set, the Loki
forwarder (:mod:`plantd.logger.loki`) gets every stored batch. Ingestion counters are exported
on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.logger import SERVICE
from plantd.logger.loki import LokiForwarder
from plantd.logger.paging import QueryError, invalid_argument, parse_stream
from plantd.logger.store import LogStore, StoreSettings
from plantd.module import Module, ModuleSettings, operation


@dataclass
class LoggerSettings(ModuleSettings):
    """``PLANTD_LOGGER_*``; stores ``log_bus_sub`` and ``event_bus_sub`` ("" disables one)."""

    health_port: int = 8083
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
    #: records one page of a query with unindexed filters (text, globs, host...) examines
    scan_rows: int = 100_000
    #: Grafana Loki push (base URL or full /loki/api/v1/push URL); empty = off
    loki_url: str = ""
    loki_tenant: str = ""
    loki_batch_size: int = 1000
    loki_batch_wait: float = 1.0
    loki_max_queue: int = 50_000
    loki_timeout: float = 5.0


def _ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


class LoggerModule(Module[LoggerSettings]):
    name = "logger"
    service = SERVICE
    settings_class = LoggerSettings
    description = "plantd logger: stores the log and event buses"

    # set by setup(), which runs before any operation is served
    store: LogStore
    forwarder: LokiForwarder | None = None

    async def setup(self) -> None:
        assert self.ctx is not None
        s = self.settings
        path = Path(s.database or self.ctx.home.data / "logger.sqlite")
        self.store = LogStore(
            StoreSettings(
                path=path,
                log_backend=s.log_bus_sub or None,
                event_backend=s.event_bus_sub or None,
                max_age=s.max_age,
                max_rows=s.max_rows,
                flush_records=s.flush_records,
                flush_interval=s.flush_interval,
                max_pending=s.max_pending,
                retention_interval=s.retention_interval,
                scan_rows=s.scan_rows,
            )
        )
        await self.store.start()
        if s.loki_url.strip():
            self.forwarder = LokiForwarder(
                s.loki_url,
                batch_size=s.loki_batch_size,
                batch_wait=s.loki_batch_wait,
                max_queue=s.loki_max_queue,
                timeout=s.loki_timeout,
                tenant=s.loki_tenant or None,
            )
            try:
                await self.forwarder.start()
            except BaseException:
                await self.store.stop()  # run() calls teardown() only once setup() succeeded
                raise
            self.store.listeners.append(self.forwarder.offer)
            self.log.info("forwarding to Loki at %s", self.forwarder.url)
            self.ctx.add_check("logger:loki", self._loki_check)
        self.ctx.add_check("logger:ingest", self._ingest_check)
        buses = ", ".join(b for b in (s.log_bus_sub, s.event_bus_sub) if b) or "nothing"
        self.log.info("logger storing %s in %s", buses, path)

    async def teardown(self) -> None:
        await self.store.stop()  # flushes the last batch, which also goes to the forwarder
        if self.forwarder is not None:
            await self.forwarder.stop()

    @operation("query")
    async def query(self, doc: Any) -> AsyncIterator[dict[str, Any]]:
        """One page; with ``stream: true`` every page (PARTIAL replies), up to ``max_records``."""
        params = doc if isinstance(doc, dict) else {}
        try:
            stream, total = parse_stream(params)
            if not stream:
                yield _ok(await self.store.query_page(params))
                return
            async for page in self.store.query_pages(params, total=total):
                yield _ok(page)
        except QueryError as exc:  # raised before the first page: arguments are checked first
            yield invalid_argument(exc)

    @operation("stats")
    async def stats(self, _doc: Any) -> dict[str, Any]:
        return _ok(await self.store.stats())

    def health(self) -> dict[str, Any]:
        counters = self.store.counters()
        doc: dict[str, Any] = {
            "status": "warn" if counters["dropped"] or counters["failed"] else "pass",
            "ingest": counters,
        }
        if self.forwarder is not None:
            doc["loki"] = self.forwarder.counters()
        return doc

    def _ingest_check(self) -> tuple[str, dict[str, Any]]:
        c = self.store.counters()
        status = "warn" if c["dropped"] or c["failed"] else "pass"
        return status, {"observedValue": c["stored"], "observedUnit": "records", **c}

    def _loki_check(self) -> tuple[str, dict[str, Any]]:
        assert self.forwarder is not None
        f = self.forwarder
        return ("warn" if f.failed or f.dropped else "pass"), f.counters()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.store.counters()
        for key in ("received", "invalid", "stored", "dropped", "failed", "trimmed"):
            yield CounterMetricFamily(
                f"plantd_logger_records_{key}", f"Log records {key}", value=c[key]
            )
        yield CounterMetricFamily(
            "plantd_logger_records_missed",
            "Records lost before reaching the logger (seq gaps)",
            value=sum(p.missed for p in self.store.producers.values()),
        )
        yield GaugeMetricFamily(
            "plantd_logger_pending", "Records waiting to be written", value=c["pending"]
        )
        if self.forwarder is not None:
            f = self.forwarder.counters()
            for key in ("sent", "dropped", "failed", "retries"):
                yield CounterMetricFamily(
                    f"plantd_logger_loki_{key}", f"Loki records {key}", value=f[key]
                )
            yield GaugeMetricFamily(
                "plantd_logger_loki_queued", "Records queued for Loki", value=f["queued"]
            )


DAEMON = LoggerModule
