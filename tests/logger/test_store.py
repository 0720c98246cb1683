"""The logger store and service over real sockets: LogBusHandler -> log bus -> store -> MDP."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.client import Client, Publisher
from plantd.client.errors import RequestRejected
from plantd.logbus import LogBusHandler, install_log_bus
from plantd.logger import SERVICE
from plantd.logger.store import LogStore, QueryError, StoreSettings, build_query
from tests.support.bus import Bus
from tests.support.modules import bus_logger, join, running_logger
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.timeout(30)


async def query(c: Client, **params: Any) -> list[dict[str, Any]]:
    reply = await c.call(SERVICE, "query", params)
    assert reply["success"] is True, reply
    return reply["data"]["records"]


async def test_handler_records_reach_store_and_come_back_over_mdp(
    tmp_path: Path, loop_broker: str, log_bus: Bus, event_bus: Bus
) -> None:
    handler = LogBusHandler("org.plantd.test", log_bus.frontend)
    logger = bus_logger("plantd.test.e2e", handler)
    try:
        async with running_logger(tmp_path, loop_broker, log_bus, event_bus) as store:
            await join(store, logger)
            first = handler.seq + 1
            logger.info("valve %s opened", "V1", extra={"fields": {"valve": "V1", "pct": 42}})
            logger.warning("pressure high")
            try:
                raise RuntimeError("pump stalled")
            except RuntimeError:
                logger.exception("pump failure")
            for i in range(50):
                logger.debug("tick %d", i)

            pub = Publisher(event_bus.frontend)
            try:

                async def event_arrived() -> bool:
                    pub.publish_nowait("org.plantd.State.changed", {"scope": "s", "key": "k"})
                    await store.flush()
                    return bool(await store.query({"source": "event", "limit": 1}))

                await wait_until_async(event_arrived, 5)
            finally:
                pub.close()

            async with Client(loop_broker, timeout=5.0) as c:
                await wait_until_async(
                    lambda: _count(c, service="org.plantd.test", text="tick 49"), 5
                )
                got = await query(c, service="org.plantd.test", level="warning", order="asc")
                assert [r["msg"] for r in got] == ["pressure high", "pump failure"]
                assert (
                    got[1]["level"] == "error"
                    and "RuntimeError: pump stalled" in got[1]["fields"]["exc"]
                )

                (valve,) = await query(c, text="V1 opened")
                assert valve["fields"] == {"valve": "V1", "pct": 42}
                assert valve["service"] == "org.plantd.test" and valve["level"] == "info"
                assert valve["logger"] == "plantd.test.e2e" and valve["seq"] == first
                assert valve["host"] and valve["pid"] > 0

                # newest first by default, limit respected; asc gives the oldest of the range
                newest = await query(c, service="org.plantd.test", text="tick", limit=3)
                assert [r["msg"] for r in newest] == ["tick 49", "tick 48", "tick 47"]
                since = newest[-1]["ts"]
                tail = await query(c, service="org.plantd.*", since=since, order="asc", text="tick")
                assert [r["msg"] for r in tail] == ["tick 47", "tick 48", "tick 49"]

                events = await query(c, source="event")
                assert events[0]["topic"] == "org.plantd.State.changed"
                assert events[0]["fields"]["key"] == "k"

                stats = (await c.call(SERVICE, "stats", {}))["data"]
                assert stats["services"]["org.plantd.test"] >= 53
                assert stats["levels"]["error"] == 1
                (producer,) = [p for p in stats["producers"] if p["service"] == "org.plantd.test"]
                assert producer["missed"] == 0 and producer["last_seq"] == handler.seq

                with pytest.raises(RequestRejected) as rejected:
                    await c.call(SERVICE, "query", {"level": "loud"})
                assert rejected.value.code == "invalid_argument"
                health = await c.call(SERVICE, "health", {})
                assert health["status"] == "pass"
    finally:
        handler.close()


async def _count(c: Client, **params: Any) -> int:
    return len(await query(c, **params))


async def test_seq_gap_shows_as_missed_in_stats(
    tmp_path: Path, loop_broker: str, log_bus: Bus
) -> None:
    handler = LogBusHandler("org.plantd.gappy", log_bus.frontend)
    logger = bus_logger("plantd.test.gap", handler)
    try:
        async with running_logger(tmp_path, loop_broker, log_bus, None) as store:
            await join(store, logger)
            logger.info("before the gap")
            handler.seq += 3  # as if the publisher had dropped three records
            logger.info("after the gap")
            async with Client(loop_broker, timeout=5.0) as c:
                await wait_until_async(lambda: _count(c, text="after the gap"), 5)
                stats = (await c.call(SERVICE, "stats", {}))["data"]
            (producer,) = stats["producers"]
            assert producer["missed"] == 3
            assert producer["last_seq"] == handler.seq
            assert stats["missed"] == 3
            assert producer["service"] == "org.plantd.gappy" and producer["pid"] > 0
    finally:
        handler.close()


async def test_producer_accounting_survives_restart(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "l.sqlite", log_backend=None, event_backend=None)
    async with LogStore(settings) as store:
        for seq in (1, 2, 5):
            store.add("svc.info", {"service": "svc", "host": "h", "pid": 7, "seq": seq, "msg": "m"})
    async with LogStore(settings) as store:
        store.add("svc.info", {"service": "svc", "host": "h", "pid": 7, "seq": 8, "msg": "m"})
        await store.flush()
        (producer,) = (await store.stats())["producers"]
        assert producer["missed"] == 4 and producer["received"] == 4


async def test_retention_trims_by_count_and_age(tmp_path: Path) -> None:
    settings = StoreSettings(
        path=tmp_path / "r.sqlite",
        log_backend=None,
        event_backend=None,
        max_rows=60,
        max_age=3600.0,
    )
    now = time.time()
    async with LogStore(settings) as store:
        # 20 records older than max_age, then 80 fresh ones (in arrival order)
        for i in range(20):
            store.add("svc.info", {"service": "svc", "ts": now - 7200 + i, "msg": f"old {i}"})
        for i in range(80):
            store.add("svc.info", {"service": "svc", "ts": now - 80 + i, "msg": f"new {i}"})
        await store.flush()
        assert (await store.stats())["total"] == 100

        # age first (20 go), then count: 80 left > 60, the 20 oldest arrivals go
        assert await store.apply_retention(now) == 40
        rows = await store.query({"order": "asc", "limit": 1000})
        assert len(rows) == 60
        assert rows[0]["msg"] == "new 20" and rows[-1]["msg"] == "new 79"

        # age only: everything older than max_age relative to a later "now"
        assert await store.apply_retention(now + 3600 - 30) == 30
        assert (await store.stats())["total"] == 30


def test_build_query_validates_and_escapes() -> None:
    sql, args = build_query({"text": "50%_done", "level": "warn", "service": "a.*"})
    assert "service GLOB ?" in sql and "level >= ?" in sql
    assert args[0] == 30 and args[1] == "a.*" and args[2] == "%50\\%\\_done%"
    assert args[-1] == 100
    for bad in (
        {"order": "sideways"},
        {"limit": -1},
        {"since": "yesterday-ish"},
        {"service": 5},
        {"level": "loud"},
    ):
        with pytest.raises(QueryError):
            build_query(bad)


def test_install_log_bus_is_idempotent() -> None:
    root = logging.getLogger("plantd.test.install")
    first = install_log_bus("svc", "tcp://127.0.0.1:1", logger=root)
    try:
        assert install_log_bus("svc", "tcp://127.0.0.1:1", logger=root) is first
        second = install_log_bus("other", "tcp://127.0.0.1:1", logger=root)
        assert [h for h in root.handlers if isinstance(h, LogBusHandler)] == [second]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()


async def test_burst_is_stored_completely_in_batches(
    tmp_path: Path, loop_broker: str, log_bus: Bus
) -> None:
    handler = LogBusHandler("org.plantd.burst", log_bus.frontend)
    logger = bus_logger("plantd.test.burst", handler)
    try:
        async with running_logger(tmp_path, loop_broker, log_bus, None, flush_records=500) as store:
            await join(store, logger)
            first = handler.seq + 1
            for i in range(5000):
                logger.info("burst %d", i, extra={"fields": {"i": i}})
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # one producer loop: the store runs in between
            await wait_until_async(
                lambda: store.producers[next(iter(store.producers))].last_seq == handler.seq, 10
            )
            await store.flush()
            stats = await store.stats()
            (producer,) = stats["producers"]
            assert producer["missed"] == 0 and handler.dropped == 0
            rows = await store.query({"text": "burst", "limit": 10000, "order": "asc"})
            assert [r["seq"] for r in rows] == list(range(first, handler.seq + 1))
            assert stats["ingest"]["flushes"] >= 2  # batched (bigger batches while one is written)
    finally:
        handler.close()


async def test_batcher_flushes_by_size_and_by_time_and_bounds_memory() -> None:
    from plantd.storage.ingest import Batcher

    batches: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        batches.append(batch)

    b: Batcher[int] = Batcher(write, size=10, interval=0.2, max_pending=25)
    task = asyncio.create_task(b.run())
    try:
        b.extend(range(10))
        await wait_until_async(lambda: batches == [list(range(10))], 0.15)  # by size, before 0.2 s
        b.add(99)
        t0 = time.monotonic()
        await wait_until_async(lambda: len(batches) == 2, 2)
        assert batches[1] == [99] and time.monotonic() - t0 >= 0.1  # by time
    finally:
        task.cancel()
    b.extend(range(30))
    assert b.pending == 25 and b.dropped == 5
    await b.flush_now()
    assert b.flushed == 36 and b.pending == 0
