"""Process faults: a frozen worker (SIGSTOP past its liveness, then SIGCONT)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from plantd.client import Client, SyncClient
from plantd.client.errors import ServiceUnavailable
from tests.support.broker import wait_service
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)

Peer = Callable[..., subprocess.Popen[bytes]]


def workers(endpoint: str) -> list[dict[str, object]]:
    with SyncClient(endpoint, timeout=2.0) as c:
        return list(c.mmi("mmi.workers")["workers"])


def test_frozen_worker_is_dropped_and_its_stale_reply_never_delivered(
    broker_endpoint: str, peer: Peer
) -> None:
    frozen = peer("plantd-worker", broker_endpoint, "svc")
    wait_service(broker_endpoint, "svc")
    first_identity = workers(broker_endpoint)[0]["identity"]

    async def scenario() -> None:
        async with Client(broker_endpoint, timeout=10.0) as c:
            slow = asyncio.create_task(c.call("svc", "sleep", {"seconds": 0.5, "who": "A"}))
            await asyncio.sleep(0.2)
            os.kill(frozen.pid, signal.SIGSTOP)  # frozen mid-request, past liveness (0.6 s)
            start = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="expired"):
                await slow
            took = time.monotonic() - start
            print(f"FIGURE sigstop_worker_client_error_s={took:.2f}")
            assert took < 2.0
            os.kill(frozen.pid, signal.SIGCONT)  # it wakes up and sends its stale reply
            # the worker notices (DISCONNECT from the broker) and registers again
            await asyncio.to_thread(
                wait_until,
                lambda: any(w["identity"] != first_identity for w in workers(broker_endpoint)),
                10,
            )
            # another client's request gets its own reply, never A's stale one
            reply = await c.call("svc", "sleep", {"seconds": 0, "who": "B"})
            assert reply == {"seconds": 0, "who": "B"}

    try:
        asyncio.run(scenario())
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    with SyncClient(broker_endpoint, timeout=2.0) as c:
        counters = c.mmi("mmi.broker")["counters"]
    assert counters["workers_expired"] >= 1
    assert counters["disconnects_sent"] >= 1
