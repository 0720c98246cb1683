"""Logger ``query`` pages: limit, cursor, byte budget, streaming, precise errors, over real sockets.

The running logger (store + MDP operations) serves a real broker; a real log bus publisher
keeps adding records while a client pages, which is what the cursor must survive.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.client import Client
from plantd.client.errors import RequestRejected
from plantd.client.reply import call_body
from plantd.logbus import LogBusHandler
from plantd.logger import SERVICE
from plantd.logger.store import MAX_LIMIT, LogStore, StoreSettings
from plantd.storage.paging import REPLY_BUDGET
from tests.support.bus import Bus
from tests.support.modules import bus_logger, join, running_logger

pytestmark = pytest.mark.timeout(60)


def fill(store: LogStore, n: int, *, service: str = "svc", size: int = 20, t0: float = 0) -> None:
    """``n`` records one millisecond apart, straight into the store (no bus)."""
    t0 = t0 or time.time() - 3600
    pad = "x" * size
    for i in range(n):
        store.add(
            f"{service}.info", {"service": service, "ts": t0 + i / 1000, "msg": f"m{i} {pad}"}
        )


async def page(c: Client, **params: Any) -> dict[str, Any]:
    reply = await c.call(SERVICE, "query", params)
    assert reply["success"] is True, reply
    return reply["data"]


async def all_pages(c: Client, max_pages: int = 2000, **params: Any) -> tuple[list[dict], int]:
    """Follow ``next`` to the end; (records, pages)."""
    out: list[dict] = []
    after = params.pop("after", None)
    for pages in range(1, max_pages + 1):
        data = await page(c, **params, **({"after": after} if after is not None else {}))
        out.extend(data["records"])
        if not data["more"]:
            assert data["next"] is None
            return out, pages
        after = data["next"]
        assert after == [data["records"][-1]["ts"], data["records"][-1]["id"]]
    raise AssertionError(f"more than {max_pages} pages")


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_paging_returns_every_record_once_while_records_keep_arriving(
    tmp_path: Path, loop_broker: str, log_bus: Bus, order: str
) -> None:
    handler = LogBusHandler("org.plantd.busy", log_bus.frontend)
    logger = bus_logger("plantd.test.busy", handler)
    try:
        async with running_logger(tmp_path, loop_broker, log_bus, None) as store:
            await join(store, logger)
            fill(store, 3000, service="org.plantd.busy", t0=time.time() - 60)
            await store.flush()
            before = {r["id"] for r in await store.query({"limit": MAX_LIMIT})}
            assert len(before) >= 3000

            stop = asyncio.Event()

            async def publish() -> int:
                n = 0
                while not stop.is_set() and n < 20_000:
                    logger.info("live %d", n)
                    n += 1
                    if n % 20 == 0:
                        await asyncio.sleep(0.002)
                return n

            publisher = asyncio.create_task(publish())
            try:
                received = store.received
                async with Client(loop_broker, timeout=5.0) as c:
                    got, pages = await all_pages(
                        c, service="org.plantd.busy", order=order, limit=50
                    )
                arrived = store.received - received
            finally:
                stop.set()
                published = await publisher
            assert published > 0 and arrived > 0  # records did arrive while paging
            ids = [r["id"] for r in got]
            assert len(ids) == len(set(ids))  # nothing twice
            assert before <= set(ids)  # nothing that was there is missed
            keys = [(r["ts"], r["id"]) for r in got]
            assert keys == sorted(keys, reverse=order == "desc")
            assert pages >= 3000 // 50
    finally:
        handler.close()


async def test_stream_equals_pages_and_pages_are_cut_by_bytes(
    tmp_path: Path, loop_broker: str
) -> None:
    async with running_logger(tmp_path, loop_broker, None, None) as store:
        fill(store, 1500, size=1000)  # ~1.5 MB: more than one reply's worth
        store.add("svc.info", {"service": "huge", "msg": "y" * (2 * REPLY_BUDGET)})
        await store.flush()
        async with Client(loop_broker, timeout=5.0) as c:
            # limit alone would fit 1500 records in one page; the byte budget cuts it
            first = await page(c, service="svc", limit=MAX_LIMIT)
            assert first["more"] is True and 0 < len(first["records"]) < 1500
            assert len(json.dumps(first, separators=(",", ":"))) < REPLY_BUDGET + 1024
            paged, pages = await all_pages(c, service="svc", limit=MAX_LIMIT)
            assert pages >= 2 and len(paged) == 1500

            parts: list[dict[str, Any]] = []
            body = call_body("query", {"service": "svc", "limit": 200, "stream": True})
            async for frames in c.stream(SERVICE, *body):
                parts.append(json.loads(frames[-1]))
            assert len(parts) == 8 and all(p["success"] for p in parts)
            assert [p["data"]["more"] for p in parts] == [True] * 7 + [False]
            streamed = [r for p in parts for r in p["data"]["records"]]
            assert streamed == paged

            # max_records ends a stream early; its last page says where to go on
            parts = []
            body = call_body(
                "query", {"service": "svc", "limit": 200, "stream": True, "max_records": 450}
            )
            async for frames in c.stream(SERVICE, *body):
                parts.append(json.loads(frames[-1])["data"])
            assert [len(p["records"]) for p in parts] == [200, 200, 50]
            assert parts[-1]["more"] is True
            rest, _ = await all_pages(c, service="svc", limit=MAX_LIMIT, after=parts[-1]["next"])
            assert [r["id"] for p in parts for r in p["records"]] + [r["id"] for r in rest] == [
                r["id"] for r in paged
            ]

            # one record larger than a whole reply still comes back, cut short and marked
            (huge,) = (await page(c, service="huge"))["records"]
            assert huge["truncated"] is True and 0 < len(huge["msg"]) < REPLY_BUDGET

            # a request without paging fields gets the first page (default 100) and says more
            data = await page(c)
            assert len(data["records"]) == 100 and data["more"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": MAX_LIMIT + 1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "abc"}, "after"),
        ({"after": [1.5]}, "after"),
        ({"after": [1.5, "7"]}, "after"),
        ({"stream": "yes"}, "stream"),
        ({"stream": True, "max_records": 0}, "max_records"),
        ({"order": "sideways"}, "order"),
        ({"since": "yesterday-ish"}, "since"),
        ({"level": "loud"}, "level"),
    ],
)
async def test_bad_paging_arguments_name_the_field(
    tmp_path: Path, loop_broker: str, params: dict[str, Any], field: str
) -> None:
    async with running_logger(tmp_path, loop_broker, None, None):
        async with Client(loop_broker, timeout=5.0) as c:
            with pytest.raises(RequestRejected) as rejected:
                await c.call(SERVICE, "query", params)
            assert rejected.value.code == "invalid_argument"
            assert rejected.value.doc["field"] == field
            assert field in str(rejected.value)
            if field == "limit":
                assert str(MAX_LIMIT) in str(rejected.value).replace(",", "")
            assert (await page(c, limit=1))["more"] is False  # and it keeps serving


async def test_existing_database_gets_the_new_index_in_place(tmp_path: Path) -> None:
    """A logger database from before the level index opens, gains it and keeps its rows."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    settings = StoreSettings(path=path, log_backend=None, event_backend=None)
    async with LogStore(settings) as store:
        fill(store, 10)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX records_level_ts")
    async with LogStore(settings) as store:
        assert len(await store.query({"limit": 100})) == 10
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "records_level_ts" in names


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_level_filter_pages_across_standard_and_custom_levels(
    tmp_path: Path, order: str
) -> None:
    """``level >= N`` runs as one index scan per level, merged: pages must still interleave."""
    settings = StoreSettings(path=tmp_path / "lv.sqlite", log_backend=None, event_backend=None)
    levels = [5, 10, 20, 25, 30, 35, 40, 45, 50, 60]
    t0 = time.time() - 100
    async with LogStore(settings) as store:
        for i in range(400):
            level = levels[(i * 7) % len(levels)]
            store.add(
                "svc", {"service": "svc", "ts": t0 + (i // 3) / 10, "level": level, "msg": f"r{i}"}
            )
        await store.flush()
        everything = await store.query({"limit": 1000, "order": order})
        for minimum in ("info", 25, "warning", 41, "critical", 55):
            number = (
                20
                if minimum == "info"
                else 30
                if minimum == "warning"
                else (50 if minimum == "critical" else minimum)
            )
            stored = {r["id"]: levels[(int(r["msg"][1:]) * 7) % len(levels)] for r in everything}
            want = [r["id"] for r in everything if stored[r["id"]] >= number]
            got: list[int] = []
            after = None
            for _ in range(200):
                data = await store.query_page(
                    {
                        "level": minimum,
                        "order": order,
                        "limit": 7,
                        **({"after": after} if after else {}),
                    }
                )
                got.extend(r["id"] for r in data["records"])
                if not data["more"]:
                    break
                after = data["next"]
            assert got == want and want, minimum


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_scanning_queries_answer_after_scan_rows_and_page_on(
    tmp_path: Path, order: str
) -> None:
    """A rare text (no index serves it) examines at most ``scan_rows`` records per page: pages
    come back short or empty with ``more``, and following ``next`` finds every match once."""
    settings = StoreSettings(
        path=tmp_path / "scan.sqlite", log_backend=None, event_backend=None, scan_rows=50
    )
    t0 = time.time() - 100
    async with LogStore(settings) as store:
        for i in range(1000):
            level = "error" if i % 3 == 0 else "info"
            msg = f"needle {i}" if i % 97 == 0 else f"hay {i}"
            store.add(
                f"s{i % 4}.{level}",
                {
                    "service": f"s{i % 4}",
                    "ts": t0 + i / 10,
                    "level": level,
                    "msg": msg,
                    "host": f"h{i % 5}",
                },
            )
        await store.flush()
        for params in (
            {"text": "needle"},
            {"text": "needle", "level": "error"},
            {"service": "s1*", "host": "h0"},
            {"service": "s1", "text": "needle"},
        ):
            everything = {
                r["id"]: r
                for r in await store.query(
                    {k: v for k, v in params.items() if k != "text"} | {"limit": 1000}
                )
            }
            want = [
                i
                for i, r in everything.items()
                if "text" not in params or params["text"] in r["msg"]
            ]
            want.sort(key=lambda i: (everything[i]["ts"], i), reverse=order == "desc")
            got: list[int] = []
            after = None
            short = 0
            for _ in range(200):
                data = await store.query_page(
                    {**params, "order": order, "limit": 5, **({"after": after} if after else {})}
                )
                got.extend(r["id"] for r in data["records"])
                short += data["more"] and len(data["records"]) < 5
                if not data["more"]:
                    break
                after = data["next"]
            assert got == want and want, params
            assert short > 0, params  # the scan bound did end pages early
            # in process, query() follows those pages up to the limit
            assert [
                r["id"] for r in await store.query({**params, "order": order, "limit": 3})
            ] == want[:3]
