"""A worker's health tells the truth about its broker: ``connected`` only once the broker has
answered (not when READY was sent into the void), ``fail`` while its broker is silent."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, daemon_env, start_broker
from tests.support.polling import wait_until
from tests.support.processes import Daemon, http_get, kill_pid

pytestmark = pytest.mark.timeout(90)


def _worker_check(port: int) -> str:
    _, _, body = http_get(f"http://127.0.0.1:{port}/healthz")
    doc = json.loads(body)
    (check,) = doc["checks"]["echo:worker"]
    return str(check["status"])


def test_worker_health_warns_while_its_broker_is_down(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    """Finding 6: 1 warn in 18 samples over a 16-20 s outage."""
    echo = Daemon("echo", daemon_env(broker, "echo"), plantd_home)
    restarted: BrokerProcess | None = None
    try:
        wait_until(lambda: _worker_check(echo.health_port) == "pass", 10, what="echo pass")
        kill_pid(broker.pid)
        time.sleep(1.0)  # two heartbeats (0.25 s) and a margin: the silence is noticed
        samples = []
        for _ in range(15):  # 3 s of an outage spanning the worker's reconnect attempts
            samples.append(_worker_check(echo.health_port))
            time.sleep(0.2)
        # its only broker is down: "fail" (with several brokers, "warn" while one answers;
        # see plantd.client.worker.registration_health)
        assert samples == ["fail"] * 15
        restarted = start_broker(broker.env, plantd_home, tag="broker2")
        wait_until(lambda: _worker_check(echo.health_port) == "pass", 15, what="pass again")
    finally:
        assert echo.stop() == 0, echo.text()[-2000:]
        if restarted is not None:
            kill_pid(restarted.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                restarted.proc.wait(timeout=1)
