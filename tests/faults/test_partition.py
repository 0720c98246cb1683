"""A real network partition: broker and worker in two network namespaces joined by a veth
pair, the link cut and restored. Needs root and iproute2; skipped cleanly otherwise.

Traffic stays between the two namespaces this test creates (link-local addresses on its own
veth pair); nothing leaves the sandbox.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.broker import PEERS
from tests.support.polling import seconds_until

pytestmark = pytest.mark.timeout(90)

BROKER_IP, WORKER_IP = "169.254.77.1", "169.254.77.2"
PORT = 19797


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"plantd-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError):
        return False
    ip("netns", "del", name)
    return True


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    if not netns_available():
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    a, b, va, vb = f"pd-a-{tag}", f"pd-b-{tag}", f"pva{tag}", f"pvb{tag}"
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        ip("link", "set", va, "netns", a)
        ip("link", "set", vb, "netns", b)
        for ns, dev, addr in ((a, va, BROKER_IP), (b, vb, WORKER_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b, vb
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_ns(ns: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, PEERS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def probe(ns: str, endpoint: str) -> tuple[int, str]:
    proc = in_ns(ns, "probe", endpoint, "svc")
    out, _ = proc.communicate(timeout=20)
    count, reply = out.split()
    return int(count), reply


def wait_probe(ns: str, endpoint: str, want: int, timeout: float) -> float:
    return seconds_until(
        lambda: probe(ns, endpoint)[0] == want, timeout, 0.1, what=f"worker count {want}"
    )


def test_partition_expires_worker_and_heals(namespaces: tuple[str, str, str]) -> None:
    a, b, vb = namespaces
    endpoint = f"tcp://{BROKER_IP}:{PORT}"
    procs = [in_ns(a, "plantd-broker", f"tcp://{BROKER_IP}:{PORT}")]
    try:
        time.sleep(0.5)
        procs.append(in_ns(b, "plantd-worker", endpoint, "svc"))
        wait_probe(a, endpoint, 1, timeout=20)
        assert probe(a, endpoint) == (1, "ping")

        ip("-n", b, "link", "set", vb, "down")  # the cable is pulled
        gone = wait_probe(a, endpoint, 0, timeout=10)
        print(f"FIGURE partition_worker_expired_s={gone:.2f}")
        assert gone < 5

        ip("-n", b, "link", "set", vb, "up")
        back = wait_probe(a, endpoint, 1, timeout=30)
        print(f"FIGURE partition_healed_worker_back_s={back:.2f}")
        assert probe(a, endpoint) == (1, "ping")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)
