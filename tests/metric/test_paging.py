"""Metric ``range``, ``list`` and ``latest`` pages over a real broker: limit, cursor, bytes,
streaming and errors naming the field."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.client import Client
from plantd.client.errors import RequestRejected
from plantd.client.reply import call_body
from plantd.metric import SERVICE
from plantd.metric.daemon import MetricModule, MetricSettings
from plantd.metric.store import MAX_LIMIT
from plantd.storage.paging import REPLY_BUDGET
from tests.support.modules import running_module

pytestmark = pytest.mark.timeout(60)


def settings(tmp_path: Path, loop_broker: str) -> MetricSettings:
    return MetricSettings(
        endpoint=loop_broker,
        heartbeat_interval=0.2,
        database=tmp_path / "m.sqlite",
        metric_bus_sub="",
        host_interval=0,
        flush_interval=0.02,
    )


async def follow(c: Client, operation: str, items: str, **params: Any) -> tuple[list[dict], int]:
    out: list[dict] = []
    after = params.pop("after", None)
    for pages in range(1, 1000):
        request = {**params, **({"after": after} if after is not None else {})}
        data = (await c.call(SERVICE, operation, request))["data"]
        out.extend(data[items])
        if not data["more"]:
            assert data["next"] is None
            return out, pages
        after = data["next"]
    raise AssertionError("too many pages")


async def test_range_pages_by_cursor_and_bytes_and_streams_the_same(
    tmp_path: Path, loop_broker: str
) -> None:
    async with running_module(MetricModule(settings(tmp_path, loop_broker)), tmp_path) as m:
        store = m.store
        assert store is not None
        t0 = time.time() - 600
        for i in range(2500):  # two samples share each timestamp: the cursor needs the id too
            store.add(
                {
                    "timestamp": t0 + i // 2,
                    "device": "d",
                    "channel": "c",
                    "value": i,
                    "tags": {"pad": "p" * 400},
                }
            )
        for i in range(30):
            store.add({"timestamp": t0 + i, "device": f"dev{i:02d}", "channel": "x", "value": i})
        await store.flush()
        async with Client(loop_broker, timeout=5.0) as c:
            for order in ("asc", "desc"):
                got, pages = await follow(
                    c, "range", "samples", device="d", channel="c", order=order, limit=300
                )
                values = [s["value"] for s in got]
                assert (
                    values
                    == sorted(values, reverse=order == "desc")
                    == (list(range(2500)) if order == "asc" else list(range(2499, -1, -1)))
                )
                assert pages == 9

            # ~1.1 MB of samples: the byte budget cuts the largest page
            first = (
                await c.call(SERVICE, "range", {"device": "d", "channel": "c", "limit": MAX_LIMIT})
            )["data"]
            assert first["more"] is True and 0 < len(first["samples"]) < 2500
            assert len(json.dumps(first, separators=(",", ":"))) < REPLY_BUDGET + 1024
            paged, _ = await follow(c, "range", "samples", device="d", channel="c", limit=MAX_LIMIT)
            assert [s["value"] for s in paged] == list(range(2500))

            body = call_body(
                "range", {"device": "d", "channel": "c", "limit": 1000, "stream": True}
            )
            parts = [json.loads(frames[-1])["data"] async for frames in c.stream(SERVICE, *body)]
            assert [p["more"] for p in parts] == [True, True, False]
            assert [s for p in parts for s in p["samples"]] == paged

            # list and latest page by name
            channels, pages = await follow(c, "list", "channels", limit=7)
            names = [(ch["device"], ch["channel"]) for ch in channels]
            assert names == sorted(names) and len(names) == 31 and pages == 5
            latest, _ = await follow(c, "latest", "samples", device="dev*", limit=4)
            assert [s["device"] for s in latest] == [f"dev{i:02d}" for i in range(30)]
            default = (await c.call(SERVICE, "list", {}))["data"]
            assert len(default["channels"]) == 31 and default["more"] is False

            for op, params, field in [
                ("range", {"device": "d", "channel": "c", "limit": 0}, "limit"),
                ("range", {"device": "d", "channel": "c", "limit": MAX_LIMIT + 1}, "limit"),
                ("range", {"device": "d", "channel": "c", "after": "x"}, "after"),
                ("range", {"device": "d", "channel": "c", "stream": 1}, "stream"),
                ("range", {"device": "d"}, "channel"),
                ("list", {"limit": True}, "limit"),
                ("list", {"after": ["d"]}, "after"),
                ("latest", {"after": 3}, "after"),
            ]:
                with pytest.raises(RequestRejected) as rejected:
                    await c.call(SERVICE, op, params)
                assert rejected.value.code == "invalid_argument", (op, params)
                assert rejected.value.doc["field"] == field, (op, params)
            health = await c.call(SERVICE, "health", {})
            assert health["status"] == "pass"
