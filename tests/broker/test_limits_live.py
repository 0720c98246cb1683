"""Issue 10, broker part, over real sockets: oversized worker replies answered and the worker
kept; mmi.workers / mmi.services paged; our clients drop stray replies."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from plantd.client import SyncClient
from plantd.client.errors import MessageTooLarge, ProtocolError, UnknownService
from plantd.security.settings import INSECURE, default_client
from tests.support.broker import BrokerProcess, RawDealer, broker_env, start_broker, wait_service
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import PlantRunner, http_get

pytestmark = pytest.mark.timeout(90)

Peer = Callable[..., subprocess.Popen[bytes]]
MIB = 1 << 20


@pytest.mark.parametrize("op", [b"big", b"bigpart"])
def test_oversized_reply_gets_413_and_worker_serves_next(
    broker_endpoint: str, peer: Peer, op: bytes
) -> None:
    """A FINAL (or a PARTIAL, followed by more parts) over 1 MiB: the client gets 413 within
    2 s naming the size and service, the worker stays registered, its remaining parts are
    discarded without a DISCONNECT, and the next request to the service succeeds."""
    peer("big-worker", broker_endpoint, "big")
    wait_service(broker_endpoint, "big")
    size = 2 * MIB
    with SyncClient(broker_endpoint, timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(MessageTooLarge) as err:
            c.request("big", op, b"%d" % size)
        assert time.monotonic() - start < 2.0
        # the size is the whole message as the broker received it: body plus MDP frames
        found = re.fullmatch(
            r"reply of (\d+) bytes from big exceeds the 1 MiB limit", str(err.value)
        )
        assert found and size < int(found[1]) < size + 100, err.value
        assert c.request("big", b"echo", b"next") == [b"echo", b"next"]
        assert c.request("big", b"echo", b"again") == [b"echo", b"again"]
        workers = c.mmi("mmi.workers")["workers"]
        counters = c.mmi("mmi.broker")["counters"]
    assert [w["service"] for w in workers] == ["big"]
    assert counters["oversized_replies"] == 1 and counters["disconnects_sent"] == 0, counters


def test_oversized_reply_to_mdp01_client_invents_nothing(broker_endpoint: str, peer: Peer) -> None:
    """MDP/0.1 has no error reply: the client gets nothing (its timeout and retry take over);
    the drop is counted and the worker keeps serving."""
    peer("big-worker", broker_endpoint, "big")
    wait_service(broker_endpoint, "big")
    raw = RawDealer(broker_endpoint)
    try:
        raw.send(b"", b"MDPC01", b"big", b"big", b"%d" % (2 * MIB))
        with pytest.raises(TimeoutError):
            raw.recv(timeout=1.0)
        raw.send(b"", b"MDPC01", b"big", b"echo", b"next")
        assert raw.recv() == [b"", b"MDPC01", b"big", b"echo", b"next"]
    finally:
        raw.close()
    with SyncClient(broker_endpoint, timeout=5.0) as c:
        counters = c.mmi("mmi.broker")["counters"]
    assert counters["oversized_replies"] == 1 and counters["requests_dropped"] == 1, counters


@pytest.fixture
def daemon_broker(plantd_home: Path, plantd_env: dict[str, str]) -> Iterator[BrokerProcess]:
    """A broker daemon at the default log level with slow heartbeats, so thousands of raw
    workers stay registered without heartbeating."""
    env = broker_env(plantd_env)
    env["PLANTD_BROKER_HEARTBEAT_INTERVAL"] = "20"
    env["PLANTD_BROKER_BUSES"] = "false"
    env["PLANTD_BROKER_LOG_LEVEL"] = "info"
    proc = start_broker(env, plantd_home)
    try:
        yield proc
    finally:
        proc.proc.terminate()
        proc.proc.wait(10)


@pytest.fixture
def many_workers_broker(daemon_broker: BrokerProcess) -> str:
    return daemon_broker.endpoint


def test_drops_and_expiry_warned_at_default_level_and_exported(
    daemon_broker: BrokerProcess,
) -> None:
    """One rate-limited WARNING line per kind with its count; the counters in /metrics."""
    endpoint = daemon_broker.endpoint
    raw = RawDealer(endpoint)
    try:
        for _ in range(3):  # MDP/0.1 service name over 255 bytes: dropped, not answered
            raw.send(b"", b"MDPC01", b"x" * 300, b"op")
        with SyncClient(endpoint, timeout=5.0) as c, pytest.raises(UnknownService):
            c.request("nosuch", b"op")  # expires after request_timeout (1 s here)
        with pytest.raises(TimeoutError):
            raw.recv(timeout=0.2)
    finally:
        raw.close()
    wait_until(
        lambda: "requests expired waiting for a worker: 1" in daemon_broker.log_text(),
        10,
        0.1,
        what="the expiry warning in the broker log",
    )
    assert 'level=warning daemon=broker logger=plantd.broker msg="requests expired' in (
        daemon_broker.log_text()
    )
    status, _, body = http_get(f"{daemon_broker.health_url}/metrics")
    metrics = body.decode()
    assert status == 200
    assert "plantd_broker_requests_dropped_total 3.0" in metrics
    assert "plantd_broker_requests_expired_total 1.0" in metrics
    assert "plantd_broker_backlog_bytes" in metrics


def test_mmi_workers_and_services_page(
    many_workers_broker: str, plant: PlantRunner, plantd_env: dict[str, str]
) -> None:
    endpoint = many_workers_broker
    ctx = zmq.Context()
    ctx.max_sockets = 3000
    socks = []  # referenced until the end: a collected socket closes (its worker leaves)
    try:
        for i in range(2500):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            default_client().apply(sock)
            sock.connect(endpoint)
            sock.send_multipart([b"MDPW02", b"\x01", b"svc.%04d" % (i % 1200)])
            socks.append(sock)
        with SyncClient(endpoint, timeout=5.0) as c:
            wait_until(lambda: c.mmi("mmi.broker")["workers"] >= 2500, 30, 0.1, what="2500 workers")
            first = c.mmi("mmi.workers")
            assert len(first["workers"]) == 1000 and first["more"] is True
            assert first["next"] == first["workers"][-1]["identity"]
            page = c.mmi("mmi.workers", json.dumps({"limit": 10, "after": first["next"]}).encode())
            assert [w["identity"] for w in page["workers"]] == sorted(
                w["identity"] for w in page["workers"]
            )
            assert page["workers"][0]["identity"] > first["next"] and page["more"] is True
            workers = c.mmi_all("mmi.workers")["workers"]
            services = c.mmi_all("mmi.services")["services"]
            last = c.mmi("mmi.services", json.dumps({"after": "svc.1198"}).encode())
            assert last == {"services": [last["services"][0]], "more": False, "next": None}
            for bad, field in ((b'{"limit": 5000}', "limit"), (b'{"after": 3}', "after")):
                with pytest.raises(ProtocolError, match=f"field '{field}'"):
                    c.mmi("mmi.workers", bad)
            with pytest.raises(ProtocolError, match="not JSON"):
                c.mmi("mmi.services", b"{nope")
        identities = [w["identity"] for w in workers]
        assert len(set(identities)) == 2500 and identities == sorted(identities)
        assert [s["name"] for s in services] == [f"svc.{i:04d}" for i in range(1200)]
        env = dict(plantd_env, PLANTD_CLIENT_ENDPOINT=endpoint)
        out = plant("-o", "json", "workers", env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)["workers"]) == 2500
        out = plant("services", env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("svc.") == 1200
    finally:
        ctx.destroy(linger=0)


def test_sync_client_drops_stray_replies() -> None:
    """Replies that are not for the request in flight (another service's, e.g. a late one
    from a broker that reuses nothing) are never handed to the caller."""
    port = free_port()
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")

    def fake_broker() -> None:
        ident, *request = router.recv_multipart()
        assert request[:3] == [b"MDPC02", b"\x01", b"svc"]
        router.send_multipart([ident, b"MDPC02", b"\x03", b"other", b"stray"])
        router.send_multipart([ident, b"MDPC02", b"\x03", b"svc", b"answer"])

    thread = threading.Thread(target=fake_broker)
    thread.start()
    try:
        # the fake broker is a plain ROUTER: the client's NULL mechanism matches it
        with SyncClient(f"tcp://127.0.0.1:{port}", timeout=5.0, security=INSECURE) as c:
            assert c.request("svc", b"op") == [b"answer"]
    finally:
        thread.join(10)
        router.close(0)
