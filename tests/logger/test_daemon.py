"""The logger daemon on the shared lifecycle and ``plant log``, as real processes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.logbus import LogBusHandler
from tests.support.broker import BrokerProcess, daemon_env
from tests.support.bus import wait_subscribed
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import Daemon, http_get, plant_popen, run_plant

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def logger_daemon(broker: BrokerProcess, plantd_home: Path) -> Iterator[Daemon]:
    env = daemon_env(
        broker,
        "logger",
        log_bus_sub=broker.bus("log")[1],
        event_bus_sub=broker.bus("event")[1],
        flush_interval="0.02",
    )
    d = Daemon("logger", env, plantd_home)
    try:
        yield d
    finally:
        assert d.stop() == 0, d.text()[-2000:]


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_logger_daemon_stores_bus_and_plant_log_reads_it(
    broker: BrokerProcess, logger_daemon: Daemon, plantd_home: Path
) -> None:
    env = broker.env
    handler = LogBusHandler("org.plantd.cli-test", broker.bus("log")[0])
    logger = logging.getLogger("plantd.test.daemon")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        # PUB/SUB joins asynchronously: log until the stored record shows up (bounded)
        def joined() -> bool:
            logger.info("hello %d", handler.seq + 1)
            out = run_plant(env, "log", "query", "-s", "org.plantd.cli-test", "-o", "json")
            return out.returncode == 0 and bool(records(out.stdout))

        assert wait_until(joined, 20, interval=0.2)
        for i in range(5):
            logger.warning("warn %d", i, extra={"fields": {"i": i}})
        time.sleep(0.3)

        out = run_plant(
            env,
            "log",
            "tail",
            "-s",
            "org.plantd.cli-test",
            "-l",
            "warning",
            "-n",
            "3",
            "-o",
            "json",
        )
        assert out.returncode == 0, out.stderr
        assert [r["msg"] for r in records(out.stdout)] == ["warn 2", "warn 3", "warn 4"]

        out = run_plant(
            env,
            "log",
            "tail",
            "-s",
            "org.plantd.cli-test",
            "-l",
            "warning",
            "-n",
            "2",
            "-o",
            "table",
        )
        lines = out.stdout.splitlines()
        assert len(lines) == 2 and "WARNING" in lines[0] and lines[1].endswith("warn 4 i=4")

        out = run_plant(env, "log", "query", "--text", "warn 1", "--since", "5m", "-o", "json")
        (rec,) = records(out.stdout)
        assert rec["fields"] == {"i": 1} and rec["service"] == "org.plantd.cli-test"

        stats = run_plant(env, "log", "stats", "-o", "json")
        assert stats.returncode == 0, stats.stderr
        doc = json.loads(stats.stdout)
        assert doc["services"]["org.plantd.cli-test"] >= 6 and doc["levels"]["warning"] >= 5
        (producer,) = [p for p in doc["producers"] if p["service"] == "org.plantd.cli-test"]
        assert producer["missed"] == 0

        # follow: the last stored record first, then live ones, no repeats
        follower = plant_popen(
            env,
            "log",
            "tail",
            "-f",
            "-s",
            "org.plantd.cli-test",
            "-n",
            "1",
            "--count",
            "2",
            "--idle",
            "10",
            "-o",
            "json",
        )
        try:
            wait_subscribed(broker.bus("log")[0], "org.plantd.cli-test.")
            logger.error("live one")
            logger.error("live two")
            out, err = follower.communicate(timeout=20)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(5)
        assert follower.returncode == 0, err
        assert [r["msg"] for r in records(out)] == ["warn 4", "live one", "live two"]

        status, _, body = http_get(f"http://127.0.0.1:{logger_daemon.health_port}/metrics")
        assert status == 200 and b"plantd_logger_records_stored" in body
    finally:
        handler.close()


def test_plant_log_unreachable_and_usage_errors(plantd_env: dict[str, str]) -> None:
    env = dict(plantd_env, PLANTD_CLIENT_ENDPOINT=f"tcp://127.0.0.1:{free_port()}")
    out = run_plant(env, "log", "tail")
    assert out.returncode == 3, out.stderr
    assert out.stderr.startswith("plant: error:") and len(out.stderr.splitlines()) == 1
    out = run_plant(env, "log", "query", "--level", "loud")
    assert out.returncode == 2
    out = run_plant(env, "log", "query", "--since", "last tuesday")
    assert out.returncode == 2


def test_plant_log_query_n_10000_of_big_records_pages_and_logger_keeps_serving(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    """10,000 records of ~600 bytes (~6 MB, far over the broker's 1 MiB message limit)."""
    import asyncio

    from plantd.logger.store import LogStore, StoreSettings

    database = plantd_home / "big-logger.sqlite"

    async def fill() -> None:
        settings = StoreSettings(path=database, log_backend=None, event_backend=None)
        async with LogStore(settings) as store:
            t0 = time.time() - 600
            for i in range(12_000):
                store.add(
                    "big.info",
                    {"service": "big", "ts": t0 + i / 100, "msg": f"record {i} " + "z" * 500},
                )

    asyncio.run(fill())
    env = daemon_env(
        broker, "logger", log_bus_sub="", event_bus_sub="", database=str(database), scan_rows="1000"
    )
    d = Daemon("logger", env, plantd_home)
    try:
        started = time.monotonic()
        out = run_plant(broker.env, "log", "query", "-s", "big", "-n", "10000", "-o", "json")
        assert out.returncode == 0, out.stderr
        got = records(out.stdout)
        assert len(got) == 10_000 and len({r["id"] for r in got}) == 10_000
        assert got[0]["msg"].startswith("record 11999 ") and got[-1]["msg"].startswith(
            "record 2000 "
        )
        assert time.monotonic() - started < 20

        out = run_plant(
            broker.env, "log", "query", "-s", "big", "-n", "12000", "--order", "asc", "-o", "json"
        )
        assert out.returncode == 0, out.stderr
        assert [r["msg"].split()[1] for r in records(out.stdout)] == [str(i) for i in range(12_000)]

        # a rare text: pages of 1,000 records examined come back empty with more, the CLI
        # follows them to the one match near the oldest end
        out = run_plant(broker.env, "log", "query", "-s", "big", "-x", "record 11 ", "-o", "json")
        assert out.returncode == 0, out.stderr
        assert [r["msg"].split()[1] for r in records(out.stdout)] == ["11"]

        # the logger keeps serving
        stats = run_plant(broker.env, "log", "stats", "-o", "json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["services"]["big"] == 12_000
        out = run_plant(broker.env, "log", "tail", "-s", "big", "-n", "3", "-o", "json")
        assert [r["msg"].split()[1] for r in records(out.stdout)] == ["11997", "11998", "11999"]
    finally:
        assert d.stop() == 0, d.text()[-2000:]
