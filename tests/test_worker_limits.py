"""The worker SDK never sends a reply part over the broker's message limit.

A real broker daemon and a real worker: an oversized reply (plain or a streamed part) comes
back to the client as a ``reply_too_large`` error within 2 s, the worker stays registered and
serves the next request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from plantd.client import Client, Worker
from plantd.client.errors import RequestRejected
from plantd.client.reply import call_body, decode_document, format_bytes
from tests.support.broker import BrokerProcess

pytestmark = pytest.mark.timeout(60)

SERVICE = "org.plantd.test.Big"
MIB = 1 << 20


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(768 * 1024) == "768 KiB"
    assert format_bytes(MIB) == "1 MiB"
    assert format_bytes(int(1.5 * MIB)) == "1.5 MiB"


async def _serve(broker: BrokerProcess, check) -> None:  # type: ignore[no-untyped-def]
    worker = Worker(broker.endpoint, SERVICE, heartbeat_interval=0.25)

    @worker.operation("blob")
    async def blob(doc: dict) -> dict:
        return {"success": True, "data": "x" * int(doc["n"])}

    @worker.operation("parts")
    async def parts(doc: dict) -> AsyncIterator[dict]:
        for n in doc["sizes"]:
            yield {"success": True, "data": "y" * int(n)}

    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.connected.wait(), 5)
        async with Client(broker.endpoint, timeout=5) as client:
            await check(client, worker)
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 5)


async def _registered(client: Client) -> bool:
    for _ in range(40):
        if await client.mmi_service(SERVICE) == "200":
            return True
        await asyncio.sleep(0.05)
    return False


def test_oversized_reply_is_an_error_and_the_worker_keeps_serving(broker: BrokerProcess) -> None:
    async def check(client: Client, worker: Worker) -> None:
        assert await _registered(client)
        start = time.monotonic()
        with pytest.raises(RequestRejected) as info:
            await client.call(SERVICE, "blob", {"n": int(1.5 * MIB)}, timeout=2)
        assert time.monotonic() - start < 2
        assert info.value.code == "reply_too_large"
        message = str(info.value)
        assert f"from {SERVICE} exceeds the 1 MiB limit" in message
        assert "1.5 MiB" in message
        assert worker.oversized == 1
        # the next request is served by the same, still registered worker
        doc = await client.call(SERVICE, "blob", {"n": 1000}, timeout=2)
        assert doc["data"] == "x" * 1000
        assert await client.mmi_service(SERVICE) == "200"
        # just under the limit still goes through the broker
        doc = await client.call(SERVICE, "blob", {"n": MIB - 4096}, timeout=2)
        assert len(doc["data"]) == MIB - 4096

    asyncio.run(_serve(broker, check))


def test_oversized_streamed_part_ends_the_stream_with_the_error(broker: BrokerProcess) -> None:
    async def check(client: Client, worker: Worker) -> None:
        assert await _registered(client)
        body = call_body("parts", {"sizes": [100, 2 * MIB, 100]})
        start = time.monotonic()
        got: list[dict] = []
        with pytest.raises(RequestRejected) as info:
            async for part in client.stream(SERVICE, *body, timeout=2):
                got.append(decode_document(part))
        assert time.monotonic() - start < 2
        assert info.value.code == "reply_too_large"
        assert [len(d["data"]) for d in got] == [100]  # the part before it arrived
        doc = await client.call(SERVICE, "parts", {"sizes": [10, 20]}, timeout=2)
        assert doc["data"] == "y" * 20
        assert await client.mmi_service(SERVICE) == "200"

    asyncio.run(_serve(broker, check))
