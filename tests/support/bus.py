"""Pub/sub buses in the test's process: proxies on ephemeral ports, and the readiness signal
that replaces "sleep until the subscription reached the proxy" (ZeroMQ's slow joiner)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from plantd.broker.bus import BusProxy


@dataclass
class Bus:
    name: str
    frontend: str
    backend: str


def start_bus(name: str) -> tuple[BusProxy, Bus]:
    """A bus proxy on ephemeral 127.0.0.1 ports (the caller stops the proxy)."""
    proxy = BusProxy(name, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    proxy.start()
    assert proxy.bound_frontend and proxy.bound_backend
    return proxy, Bus(name, proxy.bound_frontend, proxy.bound_backend)


def publish_until_seen(
    publish: Callable[[int], object],
    seen: Callable[[], object],
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    max_probes: int = 200,
) -> int:
    """Subscription readiness: call ``publish(n)`` (a probe message) then poll ``seen()``
    until the subscriber got one, bounded by ``timeout`` and ``max_probes``; returns the
    number of probes sent. A fresh subscription drops what is published before it reached
    the proxy, so this is the honest "subscribed" signal, and it is as fast as the join."""
    deadline = time.monotonic() + timeout
    for n in range(1, max_probes + 1):
        publish(n)
        poll_until = min(deadline, time.monotonic() + interval)
        while True:
            if seen():
                return n
            if time.monotonic() >= poll_until:
                break
            time.sleep(0.01)
        if time.monotonic() >= deadline:
            break
    raise AssertionError(f"{what}: no probe seen after {n} probes in {timeout}s")


def wait_subscribed(frontend: str, topic: str, timeout: float = 10.0) -> float:
    """Until a subscription to ``topic`` reached the bus proxy at ``frontend``; returns the
    seconds it took.

    The proxy's XSUB side forwards every distinct subscription to each publisher connected
    to it (and all current ones to a publisher that connects later), so a probe XPUB socket
    connected there sees ``\\x01 + topic`` exactly when real publishers learn of it: the
    subscriber's slow join is over. Only distinct topics are forwarded, so the topic must be
    one no earlier subscriber of this bus holds."""
    import zmq

    from plantd.security.settings import default_client

    want = b"\x01" + topic.encode()
    probe = zmq.Context.instance().socket(zmq.XPUB)
    probe.setsockopt(zmq.LINGER, 0)
    default_client().apply(probe)  # the bus is a CURVE server: connect as the test's admin
    probe.connect(frontend)
    start = time.monotonic()
    seen: list[bytes] = []
    try:
        while (left := start + timeout - time.monotonic()) > 0:
            if probe.poll(int(left * 1000) + 1):
                frame = probe.recv()
                if frame == want:
                    return time.monotonic() - start
                seen.append(frame)
    finally:
        probe.close(0)
    raise AssertionError(
        f"no subscription to {topic!r} at {frontend} within {timeout}s (saw {seen})"
    )
