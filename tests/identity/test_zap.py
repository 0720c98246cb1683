"""CURVE + ZAP with real sockets on 127.0.0.1: principals by key, refusals, fail closed,
and the client-side handshake verdicts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from plantd.identity.principals import Registry, init_keyring
from plantd.identity.zap import PrincipalAuthenticator
from plantd.security.curve import (
    AUTH_REJECTED,
    KEY_MISMATCH,
    configure_curve_client,
    configure_curve_server,
    open_handshake_monitor,
    watch_handshake_async,
)
from plantd.security.keys import KeyPair, Keyring, generate_keypair, load_secret

pytestmark = pytest.mark.timeout(30)


class Server:
    def __init__(self, ctx: zmq.asyncio.Context, broker: KeyPair) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        configure_curve_server(self.sock, broker)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    ring = Keyring.at_home(tmp_path)
    init_keyring(ring)
    return ring


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


def key_table(ring: Keyring) -> dict[str, str]:
    with Registry(ring) as reg:
        return {k: p.name for k, p in reg.active_keys().items()}


def client(
    ctx: zmq.asyncio.Context, pair: KeyPair, server_public: str
) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    configure_curve_client(sock, pair, server_public)
    return sock, open_handshake_monitor(sock)


async def test_known_key_reaches_the_server_as_its_principal(
    ctx: zmq.asyncio.Context, keyring: Keyring
) -> None:
    auth = PrincipalAuthenticator(ctx, lambda: key_table(keyring))
    auth.start()
    try:
        broker = load_secret(keyring.broker_secret)
        server = Server(ctx, broker)
        sock, monitor = client(ctx, load_secret(keyring.secret_path("admin")), broker.public)
        sock.connect(server.endpoint)
        assert await watch_handshake_async(monitor) is None
        await sock.send(b"hello")
        frames = await asyncio.wait_for(server.sock.recv_multipart(copy=False), 5)
        assert frames[-1].bytes == b"hello"
        assert frames[-1].get("User-Id") == "admin"
        assert frames[-1].get("Peer-Address") == "127.0.0.1"
    finally:
        auth.stop()


async def test_unknown_key_is_refused_with_a_clear_verdict(
    ctx: zmq.asyncio.Context, keyring: Keyring
) -> None:
    auth = PrincipalAuthenticator(ctx, lambda: key_table(keyring))
    auth.start()
    try:
        broker = load_secret(keyring.broker_secret)
        server = Server(ctx, broker)
        sock, monitor = client(ctx, generate_keypair(), broker.public)
        sock.connect(server.endpoint)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await watch_handshake_async(monitor) == AUTH_REJECTED
        assert loop.time() - start < 2.0
        with contextlib.suppress(zmq.Again):  # no pipe left: a DEALER send would block
            await sock.send(b"sneak", zmq.DONTWAIT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(server.sock.recv_multipart(), 0.5)
    finally:
        auth.stop()


async def test_wrong_server_key_is_a_key_mismatch(
    ctx: zmq.asyncio.Context, keyring: Keyring
) -> None:
    auth = PrincipalAuthenticator(ctx, lambda: key_table(keyring))
    auth.start()
    try:
        server = Server(ctx, load_secret(keyring.broker_secret))
        admin = load_secret(keyring.secret_path("admin"))
        sock, monitor = client(ctx, admin, generate_keypair().public)
        sock.connect(server.endpoint)
        assert await watch_handshake_async(monitor, timeout=2.0) == KEY_MISMATCH
    finally:
        auth.stop()


async def test_server_without_a_running_authenticator_refuses_clients(
    ctx: zmq.asyncio.Context, keyring: Keyring
) -> None:
    """Trap 1: without ZAP_ENFORCE_DOMAIN this handshake would succeed with any key."""
    broker = load_secret(keyring.broker_secret)
    server = Server(ctx, broker)
    sock, monitor = client(ctx, load_secret(keyring.secret_path("admin")), broker.public)
    sock.connect(server.endpoint)
    assert await watch_handshake_async(monitor) is not None  # refused, not succeeded
    with contextlib.suppress(zmq.Again):  # no pipe left: a DEALER send would block
        await sock.send(b"sneak", zmq.DONTWAIT)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(server.sock.recv_multipart(), 0.5)


async def test_revocation_refuses_new_connections_after_reload(
    ctx: zmq.asyncio.Context, keyring: Keyring
) -> None:
    with Registry(keyring) as reg:
        _, pair = reg.add("alice", ["operator"])
    assert pair is not None
    auth = PrincipalAuthenticator(ctx, lambda: key_table(keyring))
    auth.start()
    try:
        broker = load_secret(keyring.broker_secret)
        server = Server(ctx, broker)
        first, monitor = client(ctx, pair, broker.public)
        first.connect(server.endpoint)
        assert await watch_handshake_async(monitor) is None
        with Registry(keyring) as reg:
            reg.revoke("alice")
        auth.reload()
        second, monitor2 = client(ctx, pair, broker.public)
        second.connect(server.endpoint)
        assert await watch_handshake_async(monitor2) == AUTH_REJECTED
        # the live connection still talks: per-message checks are the broker's job (later)
        await first.send(b"still here")
        frames = await asyncio.wait_for(server.sock.recv_multipart(copy=False), 5)
        assert frames[-1].get("User-Id") == "alice"
    finally:
        auth.stop()


def test_blocking_watch_reports_a_key_mismatch(tmp_path: Path) -> None:
    """The CLI's blocking variant, with a plain zmq context (no authenticator needed: the
    client fails before ZAP is asked)."""
    from plantd.security.curve import watch_handshake

    context = zmq.Context()
    try:
        server = context.socket(zmq.ROUTER)
        server.linger = 0
        configure_curve_server(server, generate_keypair())
        port = server.bind_to_random_port("tcp://127.0.0.1")
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        configure_curve_client(sock, generate_keypair(), generate_keypair().public)
        monitor = open_handshake_monitor(sock)
        sock.connect(f"tcp://127.0.0.1:{port}")
        assert watch_handshake(monitor, timeout=2.0) == KEY_MISMATCH
    finally:
        context.destroy(linger=0)
