"""Peer processes for the interop tests: ``python peers.py ROLE ENDPOINT SERVICE``.

Roles: ``plantd-worker`` (our Worker echoing bodies back), ``majortomo-worker`` (majortomo's
worker echoing bodies back), ``plantd-broker`` (our broker on ENDPOINT with short heartbeats),
``mdp01-worker`` (the Guide's MDP/0.1 echo worker), ``big-worker`` (an RFC 18 worker sending
oversized replies on request); see guide_peers.py.
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def plantd_worker(endpoint: str, service: str, heartbeat: float = 0.2) -> None:
    from plantd.client import Worker

    worker = Worker(endpoint, service, heartbeat_interval=heartbeat, liveness=3)

    @worker.operation("echo", raw=True)
    async def echo(body: list[bytes]) -> list[bytes]:
        return body

    @worker.operation("stream", raw=True)
    async def stream(body: list[bytes]):  # type: ignore[no-untyped-def]
        for i in range(3):
            yield [b"part", str(i).encode()]

    @worker.operation("sleep")
    async def sleep(doc: dict[str, float]) -> dict[str, float]:
        await asyncio.sleep(doc.get("seconds", 1.0))
        return doc

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.stop()))
    await worker.run()


def majortomo_worker(endpoint: str, service: str) -> None:
    from majortomo import Worker

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Worker(endpoint, service.encode(), heartbeat_interval=0.5) as worker:
        while True:
            client, body = worker.wait_for_request()
            worker.send_reply_final(client, [b"majortomo", *body])


async def plantd_broker(endpoint: str, timings: str = "") -> None:
    """Short heartbeats and timeouts, or ``production`` timings (BrokerSettings defaults)."""
    from plantd.broker.core import BrokerSettings
    from plantd.broker.server import BrokerServer

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if timings == "production":
        settings = BrokerSettings(endpoint=endpoint)
    else:
        settings = BrokerSettings(
            endpoint=endpoint, heartbeat_interval=0.2, request_timeout=1.0, busy_timeout=2.0
        )
    await BrokerServer(settings).run(stop)


def probe(endpoint: str, service: str) -> None:
    """Print `<workers> <echo reply or error>` for service: run inside a network namespace."""
    from plantd.client import SyncClient
    from plantd.client.errors import PlantdError

    with SyncClient(endpoint, timeout=1.0) as c:
        try:
            services = {s["name"]: s for s in c.mmi("mmi.services")["services"]}
            count = int(services.get(service, {}).get("workers", 0))
            reply = c.request(service, b"echo", b"ping")[-1].decode() if count else "-"
        except PlantdError as exc:
            count, reply = -1, type(exc).__name__
    print(count, reply)


if __name__ == "__main__":
    role, endpoint = sys.argv[1], sys.argv[2]
    service = sys.argv[3] if len(sys.argv) > 3 else ""
    if role == "plantd-worker":
        heartbeat = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
        asyncio.run(plantd_worker(endpoint, service, heartbeat))
    elif role == "majortomo-worker":
        majortomo_worker(endpoint, service)
    elif role == "plantd-broker":
        asyncio.run(plantd_broker(endpoint, service))
    elif role in ("mdp01-worker", "big-worker"):
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        import guide_peers

        if role == "mdp01-worker":
            sleepy = sys.argv[4:5] == ["sleepy"]
            guide_peers.mdp01_worker(endpoint, service.encode(), sleepy=sleepy)
        else:
            guide_peers.rfc18_big_worker(endpoint, service.encode())
    elif role == "probe":
        probe(endpoint, service)
    else:
        raise SystemExit(f"unknown role {role}")
