"""The HTTP proxy next to plain MDP: state get/set through both, and SSE delivery delay.

Run: ``PYTHONPATH=. python bench/proxy.py [--seconds 2] [--inflight 16]``. Starts broker,
state, logger, metric and proxy daemons (temporary PLANTD_HOME, random ports; the stack of
tests/support/proxy.py) and measures, in one run, from one client process:

* ``state-get`` and ``state-set`` per second with 1 and N requests in flight, through the
  proxy (aiohttp client, ``GET``/``PUT /v1/state/scopes/bench/keys/k``) and directly over
  MDP (``plantd.client.Client``, ``state-get``/``state-set``);
* SSE delivery delay p50/p99: ``state-set`` sent over MDP -> its event read from
  ``GET /v1/state/watch``.

Prints a table and the HTTP/MDP ratios. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from plantd.client.client import Client
from tests.support.proxy import proxy_stack


async def rate(op: Callable[[int], Awaitable[None]], inflight: int, seconds: float) -> float:
    """Operations per second with ``inflight`` concurrent loops for ``seconds``."""
    done = 0
    end = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < end:
            await op(worker * 1_000_000 + i)
            i += 1
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(inflight)))
    return done / (time.perf_counter() - start)


async def sse_delay(url: str, client: Client, count: int) -> list[float]:
    """Seconds from each set sent over MDP to its SSE event read."""
    delays: list[float] = []
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/state/watch?scope=ssebench") as resp,
    ):
        await client.call("org.plantd.State", "state-set",
                          {"service": "ssebench", "key": "warm", "value": 0})  # fmt: skip
        await resp.content.readline()  # the opening comment
        for i in range(count):
            sent = time.perf_counter()
            await client.call("org.plantd.State", "state-set",
                              {"service": "ssebench", "key": "k", "value": i})  # fmt: skip
            while True:
                line = await asyncio.wait_for(resp.content.readline(), 10)
                if line.startswith(b"data:") and f'"value":{i},'.encode() in line:
                    break
            delays.append(time.perf_counter() - sent)
    return delays


async def measure(url: str, endpoint: str, seconds: float, inflight: int) -> None:
    client = Client(endpoint, timeout=10)
    key = f"{url}/v1/state/scopes/bench/keys/k"
    rows: list[tuple[str, float, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as http:
        async with http.put(key, json=0) as r:
            assert r.status in (200, 201), await r.text()

        async def http_get(_: int) -> None:
            async with http.get(key) as r:
                await r.read()

        async def http_set(i: int) -> None:
            async with http.put(key, json=i) as r:
                await r.read()

        async def mdp_get(_: int) -> None:
            await client.call("org.plantd.State", "state-get", {"service": "bench", "key": "k"})

        async def mdp_set(i: int) -> None:
            await client.call("org.plantd.State", "state-set",
                              {"service": "bench", "key": "k", "value": i})  # fmt: skip

        for name, via_http, via_mdp in (("get", http_get, mdp_get), ("set", http_set, mdp_set)):
            for n in (1, inflight):
                h = await rate(via_http, n, seconds)
                m = await rate(via_mdp, n, seconds)
                rows.append((f"state-{name} @{n}", h, m))
    delays = await sse_delay(url, client, 200)
    await client.close()
    print(f"{'operation':<16} {'HTTP/s':>10} {'MDP/s':>10} {'HTTP/MDP':>9}")
    for label, h, m in rows:
        print(f"{label:<16} {h:>10,.0f} {m:>10,.0f} {h / m:>9.2f}")
    q = statistics.quantiles(delays, n=100)
    print(f"SSE delivery (set over MDP -> watch event): p50 {q[49] * 1000:.2f} ms, "
          f"p99 {q[98] * 1000:.2f} ms ({len(delays)} events)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--inflight", type=int, default=16)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        proxy_stack(Path(tmp) / "home", rate_limit="0", log_level="warning") as stack,
    ):
        asyncio.run(measure(stack.url, stack.broker.endpoint, args.seconds, args.inflight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
