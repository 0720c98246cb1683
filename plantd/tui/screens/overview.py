"""Overview: services (health, workers, queue, requests/s trend) and workers (heartbeat age)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from plantd.tui.actions import bindings_for
from plantd.tui.messages import CallServiceRequested, OverviewData, ReloadRequested
from plantd.tui.model import (
    RateTracker,
    format_age,
    format_rate,
    heartbeat_status,
    sparkline,
    worker_rows,
)
from plantd.tui.screens.base import View
from plantd.tui.source import BrokerInfo, ServiceInfo, WorkerInfo
from plantd.tui.widgets.tables import selected_key, sync_rows

HEALTH_STYLES = {"OK": "bold green", "DEGRADED": "bold yellow", "DOWN": "bold red"}
WORKER_STYLES = {
    "ok": ("ok", "green"),
    "late": ("LATE", "bold yellow"),
    "expired": ("EXPIRED", "bold white on red"),
    "?": ("?", "dim"),
}


def service_health(svc: ServiceInfo) -> str:
    """Broker-reported status if any; otherwise no worker = DOWN, backlog = DEGRADED."""
    if svc.status:
        status = svc.status.upper()
        return {"PASS": "OK", "HEALTHY": "OK", "FAIL": "DOWN", "WARN": "DEGRADED"}.get(
            status, status
        )
    if svc.workers <= 0:
        return "DOWN"
    if svc.queue > svc.workers * 10:
        return "DEGRADED"
    return "OK"


class OverviewView(View):
    BINDINGS = bindings_for("overview")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rates = RateTracker()
        self.broker = BrokerInfo()
        self.registered: list[WorkerInfo] = []
        self.fold_healthy = True

    def compose(self) -> ComposeResult:
        yield Label("Services", classes="section")
        yield DataTable(id="services", cursor_type="row", zebra_stripes=False)
        yield Label("Workers", classes="section", id="workers-title")
        yield DataTable(id="workers", cursor_type="row")

    def on_mount(self) -> None:
        services = self.query_one("#services", DataTable)
        services.add_column("Service", key="name")
        services.add_column("Health", key="health")
        services.add_column("Wkr", key="workers")
        services.add_column("Queue", key="queue")
        services.add_column("Req/s", key="rate")
        services.add_column("Trend", key="trend")
        workers = self.query_one("#workers", DataTable)
        workers.add_column("Worker", key="id")
        workers.add_column("Service", key="service")
        workers.add_column("State", key="state")
        workers.add_column("Heartbeat", key="age")
        workers.add_column("Status", key="status")

    def focus_main(self) -> None:
        self.query_one("#services", DataTable).focus()

    def show(self, data: OverviewData, now: float) -> None:
        """Render one poll; `now` is the app's injected monotonic clock (for rates)."""
        if data.broker is not None:
            self.broker = data.broker
        if data.services is not None:
            rows: dict[str, tuple[object, ...]] = {}
            for svc in data.services:
                rate = self.rates.update(svc.name, svc.requests, now, svc.rate)
                health = service_health(svc)
                rows[svc.name] = (
                    svc.name,
                    Text(health, style=HEALTH_STYLES.get(health, "bold")),
                    Text(str(svc.workers), justify="right"),
                    Text(str(svc.queue), justify="right", style="bold yellow" if svc.queue else ""),
                    Text(format_rate(rate), justify="right"),
                    Text(sparkline(self.rates.history.get(svc.name, []), 12), style="cyan"),
                )
            self.rates.forget_except(set(rows))
            sync_rows(self.query_one("#services", DataTable), rows)
        if data.workers is not None:
            self.registered = list(data.workers)
            self._show_workers()

    def _show_workers(self) -> None:
        statuses = {
            w.identity: heartbeat_status(
                w.heartbeat_age, self.broker.heartbeat_interval, self.broker.liveness
            )
            for w in self.registered
        }
        rows = worker_rows(self.registered, statuses, fold_healthy=self.fold_healthy)
        wrows: dict[str, tuple[object, ...]] = {}
        for row in rows:
            label, style = WORKER_STYLES[row.status]
            wrows[row.key] = (
                row.worker,
                row.service,
                row.state,
                Text(format_age(row.age), justify="right"),
                Text(label, style=style),
            )
        sync_rows(self.query_one("#workers", DataTable), wrows)
        late = sum(s in ("late", "expired") for s in statuses.values())
        title = f"Workers ({len(self.registered)})"
        if len(rows) < len(self.registered):
            title += ", healthy ones grouped (g)"
        if late:
            title += f" — {late} late/expired"
        self.query_one("#workers-title", Label).update(title)

    def action_call_service(self) -> None:
        service = selected_key(self.query_one("#services", DataTable))
        if service:
            self.post_message(CallServiceRequested(service))

    def action_toggle_grouping(self) -> None:
        self.fold_healthy = not self.fold_healthy
        self._show_workers()

    def action_refresh(self) -> None:
        self.post_message(ReloadRequested("overview"))
