"""Write the Grafana dashboards of contrib/grafana/dashboards/ (provisioning-ready JSON).

Run ``python scripts/grafana_dashboards.py`` after changing a panel; tests/test_contrib.py
checks the committed files are what this writes and that every query parses (promtool).
Each dashboard has a ``datasource`` variable (any Prometheus) and an ``instance`` variable
(the daemon's scrape target); panels are plain time series with base units.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]

_RATE = "sum by ({by}) (rate({metric}[$__rate_interval]))"
_P = (
    "histogram_quantile({q}, sum by ({by}, le) "
    '(rate({metric}_bucket{{instance=~"$instance"}}[$__rate_interval])))'
)


def rate(metric: str, by: str) -> str:
    return _RATE.format(by=by, metric=f'{metric}{{instance=~"$instance"}}')


def quantiles(metric: str, by: str) -> list[tuple[str, str]]:
    return [
        (_P.format(q=q, by=by, metric=metric), f"p{int(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.99)
    ]


def requests_panels(prefix: str, by: str, what: str) -> list[Panel]:
    return [
        (f"{what}: requests/s", "reqps", [(rate(f"{prefix}_requests_total", by), f"{{{{{by}}}}}")]),
        (
            f"{what}: errors/s",
            "reqps",
            [(rate(f"{prefix}_request_errors_total", by), f"{{{{{by}}}}}")],
        ),
        (f"{what}: latency", "s", quantiles(f"{prefix}_request_duration_seconds", by)),
    ]


def counters(names: list[str], title: str, unit: str = "cps") -> Panel:
    return (
        title,
        unit,
        [(rate(n, "instance"), n.removeprefix("plantd_").removesuffix("_total")) for n in names],
    )


def gauges(names: list[str], title: str, unit: str = "short") -> Panel:
    return (
        title,
        unit,
        [(f'{n}{{instance=~"$instance"}}', n.removeprefix("plantd_")) for n in names],
    )


DASHBOARDS: dict[str, tuple[str, str, list[Panel]]] = {
    "broker": (
        "plantd / broker",
        'plantd_daemon_info{name="broker"}',
        [
            *requests_panels("plantd_broker_service", "service", "Per service"),
            gauges(["plantd_broker_queued_requests", "plantd_broker_idle_workers"], "Queues"),
            gauges(["plantd_broker_workers", "plantd_broker_services"], "Workers and services"),
            counters(
                [
                    "plantd_broker_requests_total",
                    "plantd_broker_replies_total",
                    "plantd_broker_errors_total",
                    "plantd_broker_workers_expired_total",
                    "plantd_broker_requests_dropped_total",
                    "plantd_broker_replies_dropped_total",
                ],
                "Broker events/s",
            ),
            gauges(["plantd_broker_queued_bytes", "plantd_broker_backlog_bytes"], "Held", "bytes"),
            (
                "Bus messages/s",
                "cps",
                [
                    (rate("plantd_bus_published_messages_total", "bus"), "published {{bus}}"),
                    (rate("plantd_bus_delivered_messages_total", "bus"), "delivered {{bus}}"),
                ],
            ),
            (
                "Bus connections",
                "short",
                [
                    ('plantd_bus_publishers{instance=~"$instance"}', "publishers {{bus}}"),
                    ('plantd_bus_subscribers{instance=~"$instance"}', "subscribers {{bus}}"),
                ],
            ),
        ],
    ),
    "state": (
        "plantd / state",
        'plantd_daemon_info{name="state"}',
        [
            *requests_panels("plantd_worker", "operation", "Per operation"),
            counters(["plantd_state_commits_total", "plantd_state_ops_applied_total"], "Writes/s"),
            gauges(["plantd_state_queue_depth"], "Writes waiting for the committer"),
            gauges(["plantd_state_revision", "plantd_state_compact_revision"], "Revisions"),
            counters(
                ["plantd_state_events_published_total", "plantd_state_events_dropped_total"],
                "State bus events/s",
            ),
        ],
    ),
    "logger": (
        "plantd / logger",
        'plantd_daemon_info{name="logger"}',
        [
            counters(
                [
                    "plantd_logger_records_received_total",
                    "plantd_logger_records_stored_total",
                    "plantd_logger_records_duplicates_total",
                    "plantd_logger_records_trimmed_total",
                ],
                "Records/s",
            ),
            counters(
                [
                    "plantd_logger_records_missed_total",
                    "plantd_logger_records_dropped_total",
                    "plantd_logger_records_failed_total",
                    "plantd_logger_records_invalid_total",
                ],
                "Records lost or refused/s",
            ),
            gauges(["plantd_logger_pending_records"], "Waiting to be written"),
            counters(
                [
                    "plantd_logger_loki_records_sent_total",
                    "plantd_logger_loki_records_rejected_total",
                    "plantd_logger_loki_records_expired_total",
                ],
                "Loki records/s",
            ),
            gauges(["plantd_logger_loki_backlog_records"], "Loki backlog"),
            counters(
                ["plantd_logger_loki_pushes_total", "plantd_logger_loki_push_retries_total"],
                "Loki pushes/s",
                "reqps",
            ),
            *requests_panels("plantd_worker", "operation", "Queries"),
        ],
    ),
    "modules": (
        "plantd / modules",
        "plantd_daemon_info",  # every daemon: also those that only call (the proxy)
        [
            *requests_panels("plantd_worker", "operation", "Per operation"),
            *requests_panels("plantd_client", "service", "Outgoing calls"),
            counters(
                [
                    "plantd_metric_samples_published_total",
                    "plantd_metric_samples_dropped_total",
                    "plantd_metric_samples_errors_total",
                    "plantd_metric_store_stored_total",
                ],
                "Metric module samples/s",
            ),
            gauges(["process_resident_memory_bytes"], "Memory", "bytes"),
            counters(["process_cpu_seconds_total"], "CPU", "percentunit"),
        ],
    ),
}


def dashboard(key: str, title: str, instances: str, panels: list[Panel]) -> dict[str, Any]:
    body = []
    for i, (panel_title, unit, targets) in enumerate(panels):
        body.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": DS,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + j)}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": f"plantd-{key}",
        "title": title,
        "tags": ["plantd"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "instance",
                    "type": "query",
                    "datasource": DS,
                    "query": f"label_values({instances}, instance)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": body,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"plantd-{key}.json": json.dumps(dashboard(key, *spec), indent=2) + "\n"
        for key, spec in DASHBOARDS.items()
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
