"""Every daemon's ``/metrics`` as an SRE reads it: ``promtool check metrics`` finds nothing
(where promtool is installed: Debian's ``prometheus`` package, which .ci/run installs),
request counters and latency histograms exist per operation and per service, label values
stay bounded, and no series carries a ``daemon`` label (scrape configs set that one)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, daemon_env
from tests.support.ports import free_port
from tests.support.processes import Daemon, http_get, read_pid_file, run_plant
from tests.support.proxy import start_proxy
from tests.test_contrib import referenced_metrics

pytestmark = pytest.mark.timeout(120)


def _metrics(port: int) -> str:
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return body.decode()


@pytest.fixture
def daemons(broker: BrokerProcess, plantd_home: Path) -> Iterator[dict[str, Daemon]]:
    started: dict[str, Daemon] = {}
    extra = {
        "logger": {
            "log_bus_sub": broker.bus("log")[1],
            "event_bus_sub": broker.bus("event")[1],
            "loki_url": f"http://127.0.0.1:{free_port()}",  # nobody there: Loki figures show
        },
        "metric": {
            "metric_bus": broker.bus("metric")[0],
            "metric_bus_sub": broker.bus("metric")[1],
        },
    }
    try:
        for name in ("state", "logger", "echo", "metric"):
            started[name] = Daemon(
                name, daemon_env(broker, name, **extra.get(name, {})), plantd_home
            )
        # the proxy: a daemon that calls other services (client metrics on its /metrics)
        started["proxy"], _ = start_proxy(broker, plantd_home)
        yield started
    finally:
        for d in started.values():
            d.stop()


def test_every_daemon_exposes_clean_metrics(
    broker: BrokerProcess, daemons: dict[str, Daemon]
) -> None:
    env = broker.env
    for _ in range(3):
        assert run_plant(env, "call", "org.plantd.module.Echo", "echo", '{"x": 1}').returncode == 0
    assert run_plant(env, "call", "org.plantd.module.Echo", "nope", "{}").returncode != 0
    run_plant(env, "call", "org.plantd.NoSuchService", "x", "{}", "--timeout", "0.5")

    base = str((read_pid_file(daemons["proxy"].home, "proxy") or {})["endpoint"])
    assert http_get(f"{base}/v1/state/scopes")[0] == 200  # the proxy calls org.plantd.State

    pages = {"broker": _metrics(int(broker.health_url.rsplit(":", 1)[1]))}
    pages.update({name: _metrics(d.health_port) for name, d in daemons.items()})

    for name, text in pages.items():
        assert 'daemon="' not in text, name
        assert f'plantd_daemon_info{{name="{name}"' in text, name

    echo = pages["echo"]
    assert 'plantd_worker_requests_total{operation="echo"} 3.0' in echo
    assert 'plantd_worker_request_errors_total{operation="echo"} 0.0' in echo
    assert 'plantd_worker_request_duration_seconds_count{operation="echo"} 3.0' in echo
    assert 'plantd_worker_request_duration_seconds_bucket{le="+Inf",operation="echo"} 3.0' in echo
    assert "plantd_worker_requests_total" in pages["state"]
    assert 'plantd_client_requests_total{service="org.plantd.State"}' in pages["proxy"]
    assert (
        'plantd_client_request_duration_seconds_count{service="org.plantd.State"}'
        in (pages["proxy"])
    )
    broker_page = pages["broker"]
    assert (
        'plantd_broker_service_request_duration_seconds_count{service="org.plantd.module.Echo"}'
        in broker_page
    )
    assert "NoSuchService" not in broker_page  # client-made names fold into "other"
    assert 'plantd_bus_published_messages_total{bus="log"}' in broker_page
    assert 'plantd_bus_subscribers{bus="log"}' in broker_page
    assert 'plantd_bus_evicted_subscribers_total{bus="log"}' in broker_page

    exposed = {
        line.split("{")[0].split(" ")[0]
        for text in pages.values()
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    # what contrib/'s alert rules and dashboards query exists (histograms by their _bucket)
    missing = {m for m in referenced_metrics() if m not in exposed and f"{m}_bucket" not in exposed}
    assert not missing, missing

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    for name, text in pages.items():
        out = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
            name,
            out.stdout,
            out.stderr,
        )


def test_latency_buckets_are_inclusive_upper_bounds_and_keys_are_bounded() -> None:
    from plantd.telemetry import LATENCY_BUCKETS, OTHER, RequestStats

    stats = RequestStats(max_keys=2)
    stats.observe("a", 0.0005)  # on a bound: that bucket (le is inclusive)
    stats.observe("a", 0.0006, error=True)
    stats.observe("a", 20.0)  # beyond the last bound: +Inf only
    stats.observe("b", 0.1)
    stats.observe("c", 0.1)  # a third key: folded
    stats.observe("d", 0.1)
    a = stats.by_key["a"]
    assert a.buckets[0] == 1 and a.buckets[1] == 1 and a.buckets[len(LATENCY_BUCKETS)] == 1
    assert (a.requests, a.errors) == (3, 1) and a.total_seconds == pytest.approx(20.0011)
    assert sorted(stats.by_key) == ["a", "b", OTHER] and stats.by_key[OTHER].requests == 2
