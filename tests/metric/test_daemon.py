"""The metric daemon on the shared lifecycle and ``plant metric``, as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, daemon_env
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import Daemon, http_get, run_plant

pytestmark = pytest.mark.timeout(90)


def test_metric_daemon_publishes_stores_and_plant_metric_reads(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    front, back = broker.bus("metric")
    env = daemon_env(
        broker,
        "metric",
        metric_bus=front,
        metric_bus_sub=back,
        host_interval="0.5",
        device="box",
        flush_interval="0.05",
        signals="sine period=2 rate=20 amplitude=5 offset=10 channel=temp units=C device=sim",
    )
    d = Daemon("metric", env, plantd_home)
    try:
        cli = dict(broker.env, PLANTD_CLIENT_METRIC_BUS=back)

        def latest_temp() -> list[dict]:
            out = run_plant(cli, "metric", "latest", "-d", "sim", "-o", "json")
            return json.loads(out.stdout) if out.returncode == 0 else []

        assert wait_until(lambda: bool(latest_temp()), 20, interval=0.2)
        (temp,) = latest_temp()
        assert temp["channel"] == "temp" and temp["units"] == "C" and 5 <= temp["value"] <= 15

        out = run_plant(cli, "metric", "list", "-o", "json")
        assert out.returncode == 0, out.stderr
        channels = {(c["device"], c["channel"]) for c in json.loads(out.stdout)}
        assert ("sim", "temp") in channels
        assert wait_until(
            lambda: (
                ("box", "cpu.percent")
                in {
                    (c["device"], c["channel"])
                    for c in json.loads(run_plant(cli, "metric", "list", "-o", "json").stdout)
                }
            ),
            10,
            interval=0.2,
        )

        out = run_plant(
            cli, "metric", "watch", "-d", "sim", "-n", "3", "--idle", "10", "-o", "json"
        )
        assert out.returncode == 0, out.stderr
        samples = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(samples) == 3 and all(s["device"] == "sim" for s in samples)

        out = run_plant(
            cli, "metric", "range", "sim", "temp", "--since", "1m", "-n", "5", "-o", "json"
        )
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)) == 5

        out = run_plant(cli, "metric", "latest", "-d", "nosuch", "-o", "json")
        assert out.returncode == 4

        status, _, body = http_get(f"http://127.0.0.1:{d.health_port}/metrics")
        assert status == 200 and b"plantd_metric_samples_published" in body
    finally:
        assert d.stop() == 0, d.text()[-2000:]


def test_plant_metric_unreachable(plantd_env: dict[str, str]) -> None:
    env = dict(plantd_env, PLANTD_CLIENT_ENDPOINT=f"tcp://127.0.0.1:{free_port()}")
    out = run_plant(env, "metric", "list")
    assert out.returncode == 3, out.stderr
