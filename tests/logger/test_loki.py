"""Loki forwarding from the logger's store against the Loki stand-in (tests/support/loki.py):
real HTTP, a real SQLite store, Loki's own validation messages."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plantd.logbus import LogBusHandler
from plantd.logger.loki import LokiForwarder, push_payload, push_url, rejected_count
from plantd.logger.store import LogStore, StoreSettings
from tests.support.loki import LokiStandIn, grouped_errors
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.timeout(60)


def _settings(path: Path) -> StoreSettings:
    return StoreSettings(path=path, log_backend=None, event_backend=None, flush_interval=0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LogStore]:
    async with LogStore(_settings(tmp_path / "l.sqlite")) as s:
        yield s


@pytest.fixture
async def loki() -> AsyncIterator[LokiStandIn]:
    async with LokiStandIn() as stand_in:
        yield stand_in


def _record(i: int, now: float, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ts": now + i / 1000,
        "level": "info" if i % 10 else "error",
        "service": "org.plantd.A",
        "host": "h1",
        "pid": 11,
        "logger": "plantd.a",
        "msg": f"m{i}",
        "fields": {"i": i, "valve id": "V1"},
        "seq": i + 1,
    }
    doc.update(over)
    return doc


async def _fill(store: LogStore, n: int, **over: Any) -> float:
    now = time.time()
    for i in range(n):
        store.add("org.plantd.A.info", _record(i, now, **over))
    await store.flush()
    return now


def _forwarder(store: LogStore, loki: LokiStandIn, **kw: Any) -> LokiForwarder:
    kw.setdefault("batch_size", 500)
    kw.setdefault("batch_wait", 0.05)
    kw.setdefault("min_backoff", 0.05)
    kw.setdefault("max_backoff", 0.2)
    return LokiForwarder(store, loki.url, **kw)


async def test_store_batches_arrive_at_loki_with_few_labels(
    store: LogStore, loki: LokiStandIn
) -> None:
    loki.status = 500  # the first push fails and is retried
    fwd = _forwarder(store, loki, batch_size=40, tenant="plant")
    await fwd.start()
    try:
        now = await _fill(store, 100)
        await wait_until_async(lambda: loki.pushes >= 1, 10)
        loki.status = None
        await wait_until_async(lambda: fwd.sent == 100, 10)
    finally:
        await fwd.stop()

    assert fwd.retries >= 1 and fwd.rejected == 0 and fwd.expired == 0
    assert fwd.status() == "pass" and fwd.last_error == ""
    assert len(loki.bodies) >= 3  # batches of at most 40
    assert all(h.get("X-Scope-OrgID") == "plant" for h in loki.headers)
    assert len(loki.entries) == 100
    labels = {e.labels for e in loki.entries}
    assert labels == {
        (("host", "h1"), ("level", "info"), ("service", "org.plantd.A")),
        (("host", "h1"), ("level", "error"), ("service", "org.plantd.A")),
    }
    by_line = {e.line: e for e in loki.entries}
    e7 = by_line["m7"]
    assert e7.ts_ns == pytest.approx((now + 0.007) * 1e9, abs=1e3)
    assert e7.metadata == {
        "logger": "plantd.a",
        "pid": "11",
        "seq": "8",
        "source": "log",
        "topic": "org.plantd.A.info",
        "i": "7",
        "valve_id": "V1",
    }
    assert fwd.cursor == 100 and await store.cursor(fwd.cursor_name, -1) == 100


async def test_loki_refusing_metadata_gets_fields_in_the_line(store: LogStore) -> None:
    """Finding 1: a Loki with structured metadata disallowed kept 0 of 1,500."""
    async with LokiStandIn(structured_metadata="refuse") as loki:
        fwd = _forwarder(store, loki)
        await fwd.start()
        try:
            await _fill(store, 1500)
            await wait_until_async(lambda: fwd.sent == 1500, 20)
        finally:
            await fwd.stop()
    assert len(loki.entries) == 1500 and fwd.rejected == 0
    assert not fwd.use_metadata and fwd.counters()["structured_metadata"] is False
    line = json.loads({e.line: e for e in loki.entries if '"m7"' in e.line}.popitem()[0])
    assert line == {
        "msg": "m7",
        "logger": "plantd.a",
        "pid": 11,
        "seq": 8,
        "source": "log",
        "topic": "org.plantd.A.info",
        "i": 7,
        "valve id": "V1",
    }


async def test_old_loki_that_drops_metadata_gets_fields_in_the_line(store: LogStore) -> None:
    """Finding 1: Loki 2.4 accepts structured metadata and silently discards it."""
    async with LokiStandIn(structured_metadata="ignore", version="2.4.2") as loki:
        fwd = _forwarder(store, loki)
        await fwd.start()
        try:
            await _fill(store, 20)
            await wait_until_async(lambda: fwd.sent == 20, 10)
        finally:
            await fwd.stop()
    assert all(json.loads(e.line)["logger"] == "plantd.a" for e in loki.entries)
    assert all(len(json.loads(body)["streams"][0]["values"][0]) == 2 for body in loki.bodies)


async def test_metadata_on_and_off_are_obeyed(tmp_path: Path) -> None:
    async with LokiStandIn(structured_metadata="refuse") as loki:
        async with LogStore(_settings(tmp_path / "on.sqlite")) as store:
            fwd = _forwarder(store, loki, metadata="on")
            await fwd.start()
            try:
                await _fill(store, 30)
                await wait_until_async(lambda: fwd.rejected == 30, 10)
            finally:
                await fwd.stop()
            assert fwd.sent == 0 and fwd.use_metadata and fwd.status() == "warn"
        async with LogStore(_settings(tmp_path / "off.sqlite")) as store:
            fwd = _forwarder(store, loki, metadata="off")
            await fwd.start()
            try:
                await _fill(store, 30)
                await wait_until_async(lambda: fwd.sent == 30, 10)
            finally:
                await fwd.stop()
    assert len(loki.entries) == 30
    with pytest.raises(ValueError, match="loki_metadata"):
        LokiForwarder(store, loki.url, metadata="maybe")  # type: ignore[arg-type]


async def test_partial_reject_is_counted_per_record_and_health_recovers(
    store: LogStore, loki: LokiStandIn
) -> None:
    """Finding 2: one bad record made 1,000 count as failed while Loki kept 999; the error
    and the warn never cleared."""
    fwd = _forwarder(store, loki, batch_size=1000, batch_wait=0.3)
    await fwd.start()
    try:
        now = time.time()
        bad = {
            3: {"fields": {f"k{n}": n for n in range(211)}},  # 211 metadata keys (limit 128)
            10: {"msg": "x" * 300_000},  # a 300 kB line (limit 256 KiB)
            500: {"ts": now - 8 * 86400},  # 8 days old (limit 7 days)
            900: {"ts": now + 3600},  # 1 h in the future (grace 10 min)
        }
        for i in range(1000):
            store.add("org.plantd.A.info", _record(i, now, **bad.get(i, {})))
        await store.flush()
        await wait_until_async(lambda: fwd.sent + fwd.rejected == 1000, 15)
        assert (fwd.sent, fwd.rejected) == (996, 4)
        assert len(loki.entries) == 996 and loki.rejected == 4
        assert fwd.status() == "warn" and "errors like" in fwd.last_error
        await _fill(store, 10)  # Loki takes a whole push again: the error is cleared
        await wait_until_async(lambda: fwd.sent == 1006, 10)
        assert fwd.status() == "pass" and fwd.last_error == ""
    finally:
        await fwd.stop()


async def test_stopping_during_an_outage_loses_nothing(tmp_path: Path) -> None:
    """Finding 3: stopping the logger during a Loki outage lost the batch in flight; a
    restarted logger resumes from the cursor, with no duplicates."""
    path = tmp_path / "l.sqlite"
    loki = LokiStandIn()
    await loki.start()
    await loki.stop()  # Loki is down; its port is known
    async with LogStore(_settings(path)) as store:
        fwd = _forwarder(store, loki)
        await fwd.start()
        await _fill(store, 300)
        await wait_until_async(lambda: fwd.retries >= 2, 10)
        await fwd.stop(drain_timeout=0.5)
        assert fwd.sent == 0 and fwd.backlog == 300 and fwd.status() == "warn"
    await loki.start()
    try:
        async with LogStore(_settings(path)) as store:  # the logger restarts
            fwd = _forwarder(store, loki)
            await fwd.start()
            try:
                await _fill(store, 5)  # new records after the restart go too
                await wait_until_async(lambda: fwd.sent == 305, 15)
            finally:
                await fwd.stop()
            assert fwd.backlog == 0 and fwd.status() == "pass"
    finally:
        await loki.stop()
    lines = loki.lines()
    assert len(lines) == 305 and len(set(lines)) == 300  # m0..m4 twice: two runs' records
    assert sorted(lines).count("m0") == 2


async def test_a_new_cursor_starts_at_the_records_stored_from_now_on(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    async with LogStore(_settings(path)) as store:
        await _fill(store, 50)  # history from before Loki was configured
    async with LokiStandIn() as loki, LogStore(_settings(path)) as store:
        fwd = _forwarder(store, loki)
        await fwd.start()
        try:
            await _fill(store, 7)
            await wait_until_async(lambda: fwd.sent == 7, 10)
        finally:
            await fwd.stop()
    assert fwd.cursor == 57 and len(loki.entries) == 7


async def test_text_is_sent_as_utf8(store: LogStore, loki: LokiStandIn) -> None:
    """Finding 7: ``\\u00dc`` and friends where UTF-8 JSON would do."""
    fwd = _forwarder(store, loki)
    await fwd.start()
    try:
        await _fill(store, 1, msg="Über 10 °C", fields={"exc": 'Traceback\n  "x"\nÄrger'})
        await wait_until_async(lambda: fwd.sent == 1, 10)
    finally:
        await fwd.stop()
    body = loki.bodies[0]
    assert "Über 10 °C".encode() in body and b"\\u00dc" not in body and b"\\u00c4" not in body
    assert loki.entries[0].metadata["exc"] == 'Traceback\n  "x"\nÄrger'


def test_rejections_are_counted_from_lokis_answers() -> None:
    one = "entry for stream '{a=\"b\"}' has timestamp too new: 2026-12-01T18:00:00Z"
    assert rejected_count(one, 1000) == 1
    assert rejected_count(grouped_errors([one, one, "stream 'x' has too many"]), 1000) == 3
    loki2 = (
        "entry with timestamp 2022-10-10 13:25:44 +0000 UTC ignored, reason: 'entry too far"
        " behind',\nentry with timestamp 2022-10-10 13:25:45 +0000 UTC ignored, reason: 'x',"
        "\ntotal ignored: 2 out of 40"
    )
    assert rejected_count(loki2, 40) == 2
    assert rejected_count("loghttp push: invalid character", 40) == 40  # a malformed push


def test_forwarder_complaints_stay_off_the_bus() -> None:
    """Finding 1: each "loki rejected" warning was forwarded and rejected in turn, forever."""
    published: list[tuple[str, Any]] = []

    class Recorder:
        def publish_nowait(self, topic: str, doc: Any) -> bool:
            published.append((topic, doc))
            return True

        def close(self) -> None:
            pass

    handler = LogBusHandler("org.plantd.Logger", "inproc://x", publisher=Recorder())
    logger = logging.getLogger("test.loki.bus")
    logger.addHandler(handler)
    try:
        logger.warning("loki rejected 3 records", extra={"bus": False})
        logger.warning("an ordinary warning")
    finally:
        logger.removeHandler(handler)
    assert [doc["msg"] for _, doc in published] == ["an ordinary warning"]


def test_push_payload_shape() -> None:
    doc = push_payload([{"ts": 1.5, "level": "warning", "service": "s", "host": "h", "msg": "x"}])
    assert doc == {
        "streams": [
            {
                "stream": {"service": "s", "level": "warning", "host": "h"},
                "values": [["1500000000", "x", {}]],
            }
        ]
    }
    assert push_url("http://loki:3100/custom/push") == "http://loki:3100/custom/push"
    assert push_payload([{"ts": 1.5, "msg": "x"}], metadata=False)["streams"][0]["values"] == [
        ["1500000000", "x"]
    ]


async def test_metadata_refusal_mixed_with_invalid_entries_counts_each_once(
    store: LogStore,
) -> None:
    """Loki names one error per entry: entries too old come back as "too old", not as
    "metadata refused"; they are counted rejected once, after the resend in the line."""
    async with LokiStandIn(structured_metadata="refuse") as loki:
        fwd = _forwarder(store, loki, batch_size=100, batch_wait=0.3)
        await fwd.start()
        try:
            now = time.time()
            for i in range(10):
                old = {"ts": now - 8 * 86400} if i in (1, 2) else {}
                store.add("org.plantd.A.info", _record(i, now, **old))
            await store.flush()
            await wait_until_async(lambda: fwd.sent + fwd.rejected == 10, 10)
        finally:
            await fwd.stop()
    assert (fwd.sent, fwd.rejected) == (8, 2) and len(loki.entries) == 8
    assert loki.rejected == 12  # 10 refused for metadata, then the 2 old ones again
