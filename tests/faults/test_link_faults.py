"""Link faults between a worker and the broker, through the userspace relay (no root)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from plantd.client import SyncClient
from plantd.client.errors import PlantdError
from tests.support.broker import wait_service
from tests.support.polling import seconds_until
from tests.support.ports import free_port, wait_listening
from tests.support.relay import Mode, Relay

pytestmark = pytest.mark.timeout(90)

Peer = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def linked(peer: Peer) -> Iterator[tuple[str, Relay]]:
    """A broker, and a worker for 'svc' that reaches it only through a relay."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    peer("plantd-broker", endpoint)
    wait_listening(port)
    relay = Relay(port)
    relay_port = relay.start()
    peer("plantd-worker", f"tcp://127.0.0.1:{relay_port}", "svc")
    wait_service(endpoint, "svc")
    yield endpoint, relay
    relay.stop()


def registered(endpoint: str) -> int:
    with SyncClient(endpoint, timeout=2.0) as c:
        services = {s["name"]: s for s in c.mmi("mmi.services")["services"]}
    return int(services.get("svc", {}).get("workers", 0))


def test_blackhole_expires_worker_then_it_comes_back(linked: tuple[str, Relay]) -> None:
    endpoint, relay = linked
    relay.set_mode(Mode.BLACKHOLE)
    # broker: liveness 3 x 0.2 s; the worker stops hearing heartbeats and reconnects in a loop
    gone = seconds_until(lambda: registered(endpoint) == 0, 5, what="worker expired")
    print(f"FIGURE blackhole_worker_expired_s={gone:.2f}")
    assert gone < 3
    with SyncClient(endpoint, timeout=3.0) as c, pytest.raises(PlantdError):
        c.request("svc", b"echo", b"lost")  # 503 after request_timeout, never silence
    connections = relay.connections
    relay.set_mode(Mode.PASS)
    back = seconds_until(lambda: registered(endpoint) == 1, 10, what="worker back")
    print(f"FIGURE blackhole_healed_worker_back_s={back:.2f}")
    assert back < 8
    assert relay.connections > connections  # it reconnected (a new TCP connection)
    with SyncClient(endpoint, timeout=3.0) as c:
        assert c.request("svc", b"echo", b"again") == [b"echo", b"again"]


def test_reset_storm_worker_recovers(linked: tuple[str, Relay]) -> None:
    endpoint, relay = linked
    for _ in range(5):  # repeated resets: reconnect storms must not wedge the worker
        relay.set_mode(Mode.RESET)
        time.sleep(0.2)
        relay.set_mode(Mode.PASS)
        time.sleep(0.2)
    # registrations left behind by ZeroMQ's silent reconnects expire after liveness x
    # interval (0.6 s) and get no requests meanwhile (they are suspect after 0.3 s)
    time.sleep(1.0)
    seconds_until(lambda: registered(endpoint) == 1, 10, what="worker back")
    with SyncClient(endpoint, timeout=3.0) as c:
        assert c.request("svc", b"echo", b"ok") == [b"echo", b"ok"]
    # never two registrations of the same worker process left behind
    time.sleep(1.0)
    assert registered(endpoint) == 1


def test_delay_below_liveness_keeps_worker(linked: tuple[str, Relay]) -> None:
    endpoint, relay = linked
    relay.set_mode(Mode.DELAY, delay=0.1)  # well under 3 x 0.2 s
    with SyncClient(endpoint, timeout=3.0) as c:
        for i in range(5):
            assert c.request("svc", b"echo", str(i).encode()) == [b"echo", str(i).encode()]
    assert registered(endpoint) == 1
