"""A raw streaming operation that yields nothing ends with an empty FINAL reply.

Found by the type checker: the worker encoded "nothing yielded" as ``None`` and handed it to the
raw encoder, which failed, so the client got an ``internal`` error instead of an empty reply.
A real broker daemon and a real worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from plantd.client import Client, Worker
from tests.support.broker import BrokerProcess

pytestmark = pytest.mark.timeout(60)

SERVICE = "org.plantd.test.RawStream"


def test_raw_stream_with_no_parts_ends_with_an_empty_final_reply(broker: BrokerProcess) -> None:
    async def main() -> None:
        worker = Worker(broker.endpoint, SERVICE, heartbeat_interval=0.25)

        @worker.operation("count", raw=True)
        async def count(body: list[bytes]) -> AsyncIterator[list[bytes]]:
            for i in range(int(body[1])):
                yield [b"part", str(i).encode()]

        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.connected.wait(), 5)
            async with Client(broker.endpoint, timeout=5) as client:
                parts = [p async for p in client.stream(SERVICE, b"count", b"2", timeout=2)]
                assert parts == [[b"part", b"0"], [b"part", b"1"]]
                parts = [p async for p in client.stream(SERVICE, b"count", b"0", timeout=2)]
                assert parts == [[]]
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
