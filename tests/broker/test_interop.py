"""Every Majordomo dialect in the wild through our broker, over real sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plantd.client import SyncClient
from tests.support.broker import RawDealer, wait_service

pytestmark = [pytest.mark.timeout(60), pytest.mark.insecure]  # foreign MDP peers


def test_majortomo_client_to_our_worker(broker_endpoint: str, peer: Callable[..., object]) -> None:
    from majortomo import Client as MajortomoClient

    peer("plantd-worker", broker_endpoint, "org.plantd.module.Echo")
    wait_service(broker_endpoint, "org.plantd.module.Echo")
    with MajortomoClient(broker_endpoint) as client:
        client.send(b"org.plantd.module.Echo", b"echo", b'{"a":1}')
        assert client.recv_all_as_list(timeout=5.0) == [b"echo", b'{"a":1}']
        # streaming PARTIALs arrive as majortomo PARTIAL/FINAL without a service frame
        client.send(b"org.plantd.module.Echo", b"stream")
        parts = list(client.recv_all(timeout=5.0))
        assert parts == [[b"part", b"0"], [b"part", b"1"], [b"part", b"2"]]


def test_our_client_to_majortomo_worker(broker_endpoint: str, peer: Callable[..., object]) -> None:
    peer("majortomo-worker", broker_endpoint, "mt.echo")
    wait_service(broker_endpoint, "mt.echo")
    with SyncClient(broker_endpoint, timeout=5.0) as c:
        for i in range(20):
            assert c.request("mt.echo", b"hello", str(i).encode()) == [
                b"majortomo",
                b"hello",
                str(i).encode(),
            ]


def test_mdp01_client_and_worker(broker_endpoint: str) -> None:
    worker, client = RawDealer(broker_endpoint), RawDealer(broker_endpoint)
    try:
        worker.send(b"", b"MDPW01", b"\x01", b"old.echo")
        wait_service(broker_endpoint, "old.echo")
        client.send(b"", b"MDPC01", b"old.echo", b"ping")
        req = worker.recv()
        assert req[:3] == [b"", b"MDPW01", b"\x02"] and req[4:] == [b"", b"ping"]
        worker.send(b"", b"MDPW01", b"\x03", req[3], b"", b"pong")
        assert client.recv() == [b"", b"MDPC01", b"old.echo", b"pong"]
    finally:
        worker.close()
        client.close()


def test_goplantd_client_and_worker(broker_endpoint: str) -> None:
    worker, client = RawDealer(broker_endpoint), RawDealer(broker_endpoint)
    try:
        worker.send(b"", b"MDPW02", b"READY", b"go.echo")
        wait_service(broker_endpoint, "go.echo")
        client.send(b"", b"MDPC02", b"REQUEST", b"go.echo", b"state-get", b"{}")
        req = worker.recv()
        while req[1] == b"HEARTBEAT":  # the broker heartbeats in the worker's dialect
            req = worker.recv()
        assert req[:2] == [b"MDPW02", b"REQUEST"] and req[3:] == [b"", b"state-get", b"{}"]
        # the Go worker omits the empty frame after the client address
        worker.send(b"", b"MDPW02", b"FINAL", req[2], b'{"success":true}')
        assert client.recv() == [b"MDPC02", b"FINAL", b"go.echo", b'{"success":true}']
    finally:
        worker.close()
        client.close()


def test_dialects_mix_on_one_broker(broker_endpoint: str, peer: Callable[..., object]) -> None:
    """A Go-dialect client and an MDP/0.1 client both reach our RFC 18 worker."""
    peer("plantd-worker", broker_endpoint, "mix")
    wait_service(broker_endpoint, "mix")
    go, old = RawDealer(broker_endpoint), RawDealer(broker_endpoint)
    try:
        go.send(b"", b"MDPC02", b"REQUEST", b"mix", b"echo", b"go")
        old.send(b"", b"MDPC01", b"mix", b"echo", b"old")
        assert go.recv() == [b"MDPC02", b"FINAL", b"mix", b"echo", b"go"]
        assert old.recv() == [b"", b"MDPC01", b"mix", b"echo", b"old"]
    finally:
        go.close()
        old.close()
