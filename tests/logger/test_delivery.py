"""No record lost between a producer and the logger: at the producer's exit (bounded linger)
and before the logger subscribed (the producer's backlog, replayed when the logger arrives)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plantd.logger.store import LogStore, StoreSettings
from tests.support.broker import BrokerProcess, daemon_env
from tests.support.bus import Bus
from tests.support.polling import wait_until, wait_until_async
from tests.support.processes import Daemon, run_plant

pytestmark = pytest.mark.timeout(90)

PRODUCER = textwrap.dedent(
    """
    import logging, sys
    from plantd.logbus import install_log_bus
    install_log_bus("org.plantd.exiting", sys.argv[1])
    log = logging.getLogger("exiting")
    log.setLevel(logging.INFO)
    for i in range(int(sys.argv[2])):
        log.info("record %d", i + 1)
    # no sleep, no explicit close: logging.shutdown() at exit must flush what is queued
    """
)


async def test_a_producer_that_logs_and_exits_loses_nothing(tmp_path: Path, log_bus: Bus) -> None:
    """Finding 4 (623, then 139, of 2,000 lost at exit, seq gaps none) and finding 5 (each
    producer's first record lost while the connection joins)."""
    settings = StoreSettings(
        path=tmp_path / "l.sqlite",
        log_backend=log_bus.backend,
        event_backend=None,
        flush_interval=0.01,
    )
    async with LogStore(settings) as store:
        for run in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                PRODUCER,
                log_bus.frontend,
                "2000",
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()

            async def stored(want: int = 2000 * (run + 1)) -> bool:
                await store.flush()
                return store.counters()["stored"] >= want

            await wait_until_async(stored, 15)
        records = await store.query({"service": "org.plantd.exiting", "limit": 10_000})
        producers = [p for p in store.producers.values()]
    assert len(records) == 4000
    assert len(producers) == 2
    for p in producers:
        assert (p.first_seq, p.last_seq, p.received, p.missed) == (1, 2000, 2000, 0)
    msgs = sorted(int(r["msg"].split()[1]) for r in records)
    assert msgs == sorted(list(range(1, 2001)) * 2)


async def test_replayed_records_the_logger_already_has_are_dropped(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "l.sqlite", log_backend=None, event_backend=None)
    async with LogStore(settings) as store:
        base = {"service": "s", "host": "h", "pid": 1, "level": "info"}
        for seq in (4, 5):  # live first: the subscription let these through
            store.add("s.info", {**base, "seq": seq, "msg": f"live {seq}"})
        for seq in (1, 2, 3, 4, 5):  # then the backlog, replayed
            store.add("s.info", {**base, "seq": seq, "msg": f"replay {seq}", "replay": True})
        store.add("s.info", {**base, "seq": 6, "msg": "live 6"})
        await store.flush()
        msgs = [r["msg"] for r in await store.query({"order": "asc", "limit": 100})]
        (p,) = store.producers.values()
    assert sorted(msgs) == ["live 4", "live 5", "live 6", "replay 1", "replay 2", "replay 3"]
    assert (p.first_seq, p.last_seq, p.received, p.missed, p.resets) == (1, 6, 6, 0, 0)
    assert store.counters()["duplicates"] == 2


def test_startup_lines_reach_a_logger_started_later(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    """Finding 5: 9 of 27 start-up lines arrived, none from the broker or state."""
    echo = Daemon("echo", daemon_env(broker, "echo"), plantd_home)
    try:
        time.sleep(0.5)  # both have logged their start-up; nobody stores the log bus yet
        logger = Daemon(
            "logger",
            daemon_env(
                broker,
                "logger",
                log_bus_sub=broker.bus("log")[1],
                event_bus_sub=broker.bus("event")[1],
                flush_interval="0.02",
            ),
            plantd_home,
        )
        try:

            def stored(service: str) -> list[str]:
                out = run_plant(
                    broker.env, "log", "query", "-s", service, "-n", "1000", "-o", "json"
                )
                return out.stdout.splitlines() if out.returncode == 0 else []

            def has(service: str, *texts: str) -> bool:
                lines = "\n".join(stored(service))
                return all(t in lines for t in texts)

            wait_until(
                lambda: has("org.plantd.Broker", "broker starting", "broker ready"),
                20,
                interval=0.3,
                what="broker start-up lines stored",
            )
            wait_until(
                lambda: has("org.plantd.module.Echo", "echo starting", "echo ready"),
                20,
                interval=0.3,
                what="echo start-up lines stored",
            )
        finally:
            assert logger.stop() == 0, logger.text()[-2000:]
    finally:
        assert echo.stop() == 0, echo.text()[-2000:]
