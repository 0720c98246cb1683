"""The state daemon ``org.plantd.State``: the durable store served over MDP.

One process owns the database (the store's file lock refuses a second one). It registers
``workers`` MDP workers for the service: a Majordomo worker serves one request at a time,
so several workers are what lets concurrent clients reach the store together and share a
group commit (one fsync for many writes) instead of queueing one fsync each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plantd.daemons.lifecycle import Daemon, DaemonContext, StartupRefused
from plantd.exitcodes import ExitCode
from plantd.state.settings import SERVICE, StateSettings, audit_path, db_path
from plantd.telemetry import FamilyCollector, worker_families

__all__ = ["DAEMON", "SERVICE", "StateDaemon", "StateSettings"]


class _StateCollector:
    """Prometheus collector reading the store and service counters on scrape."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        store, svc = self.service.store, self.service
        gauges = {
            "revision": ("Current global revision", store.revision),
            "compact_revision": ("Newest revision dropped from history", store.compact_revision),
            "queue_depth": ("Writes waiting for the committer", store.queue_depth),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"plantd_state_{name}", doc, value=value)
        counters = {
            "commits": ("Durable write transactions", store.commits),
            "ops_applied": ("Write operations applied", store.ops_applied),
            "requests": ("MDP requests served", svc.requests),
            "rejected": ("MDP requests refused", svc.rejected),
            "events_published": ("Changes published on the state bus", svc.published),
            "events_dropped": ("Changes the bus publisher dropped", svc.publish_dropped),
            "denied": ("Requests refused by authorization", svc.denied),
            "audit_failed": ("Audit rows that could not be written", svc.audit_failed),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"plantd_state_{name}", doc, value=value)


class StateDaemon(Daemon[StateSettings]):
    name = "state"
    service = SERVICE
    settings_class = StateSettings
    description = "plantd state: durable scoped key-value store"

    def db_path(self, ctx: DaemonContext) -> Path:
        return db_path(self.settings, ctx.home)

    async def run(self, ctx: DaemonContext) -> None:
        from plantd.client import Publisher, Worker
        from plantd.client.worker import registration_health
        from plantd.identity.auditwriter import AuditWriter
        from plantd.identity.authority import Authority
        from plantd.identity.guard import Guard
        from plantd.security.keys import Keyring
        from plantd.security.settings import security_enabled
        from plantd.state import CorruptDatabase, InvalidArgument, StateStore, StoreLocked
        from plantd.state.audit import StoreAudit
        from plantd.state.backend import open_backend
        from plantd.state.service import StateService

        s = self.settings
        if s.workers < 1:
            raise ValueError(f"PLANTD_STATE_WORKERS must be >= 1, got {s.workers}")
        path = self.db_path(ctx)
        try:
            store = await open_backend(s, path)
        except StoreLocked as exc:
            raise StartupRefused(exc.message, ExitCode.CONFLICT) from None
        except (CorruptDatabase, InvalidArgument) as exc:
            raise StartupRefused(exc.message) from None
        publisher = Publisher(s.state_bus) if s.state_bus.strip() else None
        events = Publisher(s.event_bus) if s.event_bus.strip() else None
        keyring = Keyring.at_home(ctx.home.root)
        authority = Authority(keyring)
        audit: AuditWriter | StoreAudit | None = None
        try:
            secure = security_enabled()
            upkeep: dict[str, Any] = {
                "service": s.service,
                "publish": events.publish_nowait if events else None,
                "retention": s.audit_retention,
                "head_interval": s.audit_head_interval,
            }
            if isinstance(store, StateStore):  # the rows go into the writes' transactions
                audit = await StoreAudit.open(store, keyring_audit=keyring.audit, **upkeep)
            else:
                audit = await AuditWriter.open(audit_path(s, ctx.home), **upkeep)
            guard = Guard(authority, service=s.service, secure=secure)
            service = StateService(
                store,
                publish=publisher.publish_nowait if publisher else None,
                failpoint=s.failpoint,
                watch_limit=s.watch_limit,
                service=s.service,
                guard=guard,
                audit=audit,
                audit_wait=s.audit_wait,
            )
            if not secure:
                ctx.log.warning("security is off: anonymous callers may read and write")
            if s.failpoint:
                ctx.log.warning("FAILPOINT %s is armed (tests only)", s.failpoint)
            ctx.metrics.register(_StateCollector(service))
            workers = []
            for _ in range(s.workers):
                worker = Worker(
                    s.endpoint,
                    s.service,
                    heartbeat_interval=s.heartbeat_interval,
                    liveness=s.liveness,
                )
                service.attach(worker)
                workers.append(worker)
            ctx.metrics.register(FamilyCollector(lambda: worker_families(w.stats for w in workers)))

            def registered() -> tuple[str, dict[str, Any]]:
                status, detail = registration_health(workers)
                return status, {**detail, "workers": sum(w.broker_answering() for w in workers)}

            def storage() -> tuple[str, dict[str, Any]]:
                status, reason = store.status()
                if reason:
                    return status, {"output": reason}
                return status, {"observedValue": store.revision, "observedUnit": "revision"}

            def auditing() -> tuple[str, dict[str, Any]]:
                assert audit is not None
                problem = audit.last_error or authority.policy_error
                if problem or service.audit_failed:
                    return "warn", {"output": problem or f"{service.audit_failed} rows lost"}
                return "pass", {"observedValue": audit.head.seq, "observedUnit": "audit seq"}

            ctx.add_check("state:worker", registered)
            ctx.add_check("state:store", storage)
            ctx.add_check("state:audit", auditing)
            tasks = [
                asyncio.create_task(w.run(), name=f"state.worker{i}") for i, w in enumerate(workers)
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(workers[0].connected.wait(), 3.0)
            ctx.set_ready()
            ctx.log.info(
                "state serving %s from %s (revision %d) via %s with %d workers",
                s.service,
                s.etcd_endpoints if s.backend == "etcd" else path,
                store.revision,
                s.endpoint,
                len(workers),
            )
            stop = asyncio.create_task(ctx.stop.wait())
            try:
                done, _ = await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
                failed = [t for t in done if t is not stop and not t.cancelled() and t.exception()]
            finally:
                stop.cancel()
                await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            await store.close()
            if audit is not None:
                await audit.close()
            authority.close()
            for pub in (publisher, events):
                if pub is not None:
                    pub.close()
            ctx.log.info("state store %s closed at revision %d", s.backend, store.revision)


DAEMON = StateDaemon
