"""The logger daemon forwarding to the Loki stand-in, as real processes: settings wiring, no
log loop on its own rejections, and a logger stopped during a Loki outage that delivers
everything after its restart."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plantd.logbus import LogBusHandler
from tests.support.broker import BrokerProcess, daemon_env
from tests.support.loki import LokiStandIn
from tests.support.polling import wait_until
from tests.support.processes import Daemon, http_get

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")


class LokiThread:
    """The stand-in on its own event loop thread, for tests that drive processes."""

    def __init__(self, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.loki = LokiStandIn(**kw)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.run(self.loki.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def loki() -> Iterator[LokiThread]:
    lt = LokiThread(structured_metadata="refuse")
    lt.run(lt.loki.start())
    try:
        yield lt
    finally:
        lt.close()


def _logger(broker: BrokerProcess, home: Path, url: str, metadata: str) -> Daemon:
    env = daemon_env(
        broker,
        "logger",
        log_bus_sub=broker.bus("log")[1],
        event_bus_sub="",
        flush_interval="0.02",
        loki_url=url,
        loki_metadata=metadata,
        loki_batch_wait="0.1",
    )
    return Daemon("logger", env, home)


def _loki_health(d: Daemon) -> dict[str, Any]:
    _, _, body = http_get(f"http://127.0.0.1:{d.health_port}/healthz")
    (check,) = json.loads(body)["checks"]["logger:loki"]
    return dict(check)


def _producer(broker: BrokerProcess) -> tuple[logging.Logger, LogBusHandler]:
    handler = LogBusHandler("org.plantd.loki-test", broker.bus("log")[0])
    logger = logging.getLogger("plantd.test.loki.daemon")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_rejections_do_not_loop_and_health_says_so(
    broker: BrokerProcess, plantd_home: Path, loki: LokiThread
) -> None:
    """Finding 1: with metadata refused, each "loki rejected" warning was forwarded and
    rejected in turn, about one a second, forever."""
    logger, handler = _producer(broker)
    d = _logger(broker, plantd_home, loki.loki.url, "on")  # on: no fallback, all refused
    try:
        wait_until(lambda: loki.loki.rejected > 0, 20, what="start-up lines pushed")
        for i in range(50):
            logger.info("record %d", i, extra={"fields": {"i": i}})
        wait_until(lambda: _loki_health(d).get("rejected", 0) >= 50, 20, what="50 records rejected")
        check = _loki_health(d)
        assert check["status"] == "warn" and "structured metadata" in check["last_error"]
        time.sleep(1.5)  # quiet: nothing new is logged, so nothing new may be pushed
        pushes = loki.loki.pushes
        time.sleep(2.5)
        assert loki.loki.pushes == pushes
    finally:
        handler.close()
        assert d.stop() == 0, d.text()[-2000:]
    assert "loki rejected" in d.text()  # in the log file, once, not on the bus


def test_a_logger_stopped_during_an_outage_delivers_after_restart(
    broker: BrokerProcess, plantd_home: Path, loki: LokiThread
) -> None:
    """Finding 3: 300 of 300 records never reached Loki although the logger had them."""
    logger, handler = _producer(broker)
    try:
        d = _logger(broker, plantd_home, loki.loki.url, "auto")
        try:
            wait_until(lambda: len(loki.loki.entries) > 0, 20, what="start-up lines pushed")
            loki.run(loki.loki.stop())  # Loki goes down
            for i in range(300):
                logger.info("outage %d", i)
            wait_until(lambda: _loki_health(d)["backlog"] >= 300, 20, what="300 waiting")
        finally:
            assert d.stop() == 0, d.text()[-2000:]
        loki.run(loki.loki.start())  # same port
        d = _logger(broker, plantd_home, loki.loki.url, "auto")
        try:
            wait_until(
                lambda: (
                    sum(line.startswith('{"msg":"outage ') for line in loki.loki.lines()) >= 300
                ),
                20,
                what="300 outage records in Loki",
            )
            wait_until(lambda: _loki_health(d)["status"] == "pass", 10, what="health pass")
        finally:
            assert d.stop() == 0, d.text()[-2000:]
    finally:
        handler.close()
    outage = [json.loads(x)["msg"] for x in loki.loki.lines() if x.startswith('{"msg":"outage ')]
    assert sorted(outage) == sorted(f"outage {i}" for i in range(300))  # none twice
