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

from plantd.daemons.lifecycle import StartupRefused
from plantd.exitcodes import ExitCode
from plantd.logger import SERVICE
from plantd.logger.loki import LokiForwarder
from plantd.logger.store import LogStore, StoreSettings
from plantd.module import Module, ModuleSettings, operation
from plantd.protocol.envelope import ok
from plantd.storage.paging import serve_pages
from plantd.vocabulary import HEALTH_PORTS


@dataclass
class LoggerSettings(ModuleSettings):
    """``PLANTD_LOGGER_*``; stores ``log_bus_sub`` and ``event_bus_sub`` ("" disables one)."""

    health_port: int = HEALTH_PORTS["logger"]
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
    loki_timeout: float = 5.0
    #: structured metadata: auto (detect a Loki that refuses or drops it), on, off
    loki_metadata: str = "auto"
    #: deprecated and ignored (a warning at start when set): the store is the queue; kept so
    #: old configs still load
    loki_max_queue: int = 0


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
        if s.loki_max_queue:
            self.log.warning(
                "loki_max_queue=%d is ignored: the store is the Loki queue (memory holds one"
                " batch of loki_batch_size=%d records)",
                s.loki_max_queue,
                s.loki_batch_size,
            )
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
            metadata = s.loki_metadata.strip().lower()
            if metadata not in ("auto", "on", "off"):
                await self.store.stop()
                raise StartupRefused(
                    f"loki_metadata: expected auto, on or off, got {s.loki_metadata!r}",
                    ExitCode.USAGE,
                )
            try:
                self.forwarder = LokiForwarder(
                    self.store,
                    s.loki_url,
                    batch_size=s.loki_batch_size,
                    batch_wait=s.loki_batch_wait,
                    timeout=s.loki_timeout,
                    tenant=s.loki_tenant or None,
                    metadata=metadata,  # type: ignore[arg-type]
                )
                await self.forwarder.start()
            except BaseException:
                await self.store.stop()  # run() calls teardown() only once setup() succeeded
                raise
            self.log.info("forwarding to Loki at %s", self.forwarder.url)
            self.ctx.add_check("logger:loki", self._loki_check)
        self.ctx.add_check("logger:ingest", self._ingest_check)
        buses = ", ".join(b for b in (s.log_bus_sub, s.event_bus_sub) if b) or "nothing"
        self.log.info("logger storing %s in %s", buses, path)

    async def teardown(self) -> None:
        if self.forwarder is not None:
            await self.store.flush()  # the last records, so the forwarder can still send them
            await self.forwarder.stop()  # what Loki did not acknowledge waits in the store
        await self.store.stop()

    @operation("query")
    async def query(self, doc: Any) -> AsyncIterator[dict[str, Any]]:
        """One page; with ``stream: true`` every page (PARTIAL replies), up to ``max_records``."""
        store = self.store
        async for reply in serve_pages(
            doc, store.query_page, lambda params, total: store.query_pages(params, total=total)
        ):
            yield reply

    @operation("stats")
    async def stats(self, _doc: Any) -> dict[str, Any]:
        return ok(await self.store.stats())

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
        return f.status(), {"observedValue": f.backlog, "observedUnit": "records", **f.counters()}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.store.counters()
        for key, text in (
            ("received", "Bus messages received (log and event buses)"),
            ("invalid", "Bus messages that were not a JSON record (not stored)"),
            ("duplicates", "Replayed records already stored (not stored again)"),
            ("stored", "Records written to the logger's database"),
            ("dropped", "Records dropped because too many waited to be written"),
            ("failed", "Records lost because their database write failed"),
            ("trimmed", "Records deleted by retention (max_age, max_rows)"),
        ):
            yield CounterMetricFamily(f"plantd_logger_records_{key}", text, value=c[key])
        yield CounterMetricFamily(
            "plantd_logger_records_missed",
            "Records lost between producers and the logger (gaps in their seq)",
            value=sum(p.missed for p in self.store.producers.values()),
        )
        yield GaugeMetricFamily(
            "plantd_logger_pending_records", "Records waiting to be written", value=c["pending"]
        )
        if self.forwarder is not None:
            f = self.forwarder.counters()
            for key, text in (
                ("sent", "Log records Loki accepted"),
                ("rejected", "Log records Loki refused (counted from its 400 answers)"),
                ("expired", "Log records deleted by retention before they reached Loki"),
            ):
                yield CounterMetricFamily(f"plantd_logger_loki_records_{key}", text, value=f[key])
            yield CounterMetricFamily(
                "plantd_logger_loki_pushes", "Push requests Loki answered for good", f["pushes"]
            )
            yield CounterMetricFamily(
                "plantd_logger_loki_push_retries",
                "Push attempts retried after 429, 5xx or a connection error",
                value=f["retries"],
            )
            yield GaugeMetricFamily(
                "plantd_logger_loki_backlog_records",
                "Stored records Loki has not acknowledged yet",
                value=f["backlog"],
            )


DAEMON = LoggerModule
