"""CURVE socket setup and handshake diagnostics for every plantd socket.

Fail closed (security-notes trap 1): :func:`configure_curve_server` always sets a ZAP domain
and ``ZAP_ENFORCE_DOMAIN``, so a server whose authenticator is not running refuses every
client instead of accepting any key. Start the authenticator (``plantd.identity.zap``)
before the first bind.

A refused handshake never raises in the client (trap 4): :func:`watch_handshake` reads the
socket monitor and turns the events into a message a person can act on.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:  # a blocking CLI command must not load asyncio (tests/state/test_cli_state.py)
    import zmq.asyncio

from plantd.security.keys import KeyPair

DOMAIN = "plantd"
AUTH_REJECTED = "authentication rejected by broker"
KEY_MISMATCH = "broker key mismatch"
PROTOCOL_MISMATCH = "security handshake failed (does the broker use CURVE?)"


def configure_curve_server(socket: zmq.Socket[Any], server: KeyPair, domain: str = DOMAIN) -> None:
    """Make ``socket`` a CURVE server that needs ZAP to say yes (set before bind)."""
    if server.secret is None:
        raise ValueError("a CURVE server needs its secret key")
    socket.curve_server = True
    socket.curve_secretkey = server.secret.encode("ascii")
    socket.curve_publickey = server.public.encode("ascii")
    socket.zap_domain = domain.encode("utf-8")
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def configure_curve_client(socket: zmq.Socket[Any], client: KeyPair, server_public: str) -> None:
    """Make ``socket`` a CURVE client of the server with ``server_public`` (set before connect)."""
    if client.secret is None:
        raise ValueError("a CURVE client needs its secret key")
    socket.curve_serverkey = server_public.encode("ascii")
    socket.curve_publickey = client.public.encode("ascii")
    socket.curve_secretkey = client.secret.encode("ascii")


_VERDICTS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: AUTH_REJECTED,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: KEY_MISMATCH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: PROTOCOL_MISMATCH,
}
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | sum(_VERDICTS)


_monitors = itertools.count()


def open_handshake_monitor(socket: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """A monitor of the handshake events of ``socket`` (call before connect).

    Its inproc address is unique per call: pyzmq's ``get_monitor_socket`` names it after the
    socket's file descriptor, which a reconnecting client's next socket reuses while the
    closed socket's monitor may still be bound ("Address already in use")."""
    addr = f"inproc://plantd.handshake.{os.getpid()}.{next(_monitors)}"
    socket.monitor(addr, _WATCHED)
    monitor: zmq.Socket[Any] = socket.context.socket(zmq.PAIR)
    monitor.connect(addr)
    return monitor


def _event(frames: list[bytes]) -> int:
    """The event number of a monitor message (frame 1: u16 event, u32 value; frame 2: the
    endpoint). Parsed here: ``zmq.utils.monitor`` imports asyncio, which a blocking CLI
    command must not load."""
    return int.from_bytes(frames[0][:2], sys.byteorder)  # libzmq copies a native uint16_t


def _verdict(event: int) -> tuple[bool, str | None]:
    """(decided, message): success decides with None, a failure with its message."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return True, None
    if event in _VERDICTS:
        return True, _VERDICTS[event]
    return False, None


def read_verdict(monitor: zmq.Socket[Any]) -> tuple[bool, str | None]:
    """Read the events waiting on a monitor without blocking: ``(decided, message)`` as
    :func:`watch_handshake` would decide (the first deciding event wins)."""
    while monitor.poll(0):
        decided, message = _verdict(_event(monitor.recv_multipart()))
        if decided:
            return True, message
    return False, None


def watch_handshake(monitor: zmq.Socket[Any], timeout: float = 2.0) -> str | None:
    """Wait up to ``timeout`` s on a (blocking) monitor socket from
    :func:`open_handshake_monitor`: the failure message a person can act on
    (:data:`AUTH_REJECTED`, :data:`KEY_MISMATCH`), or None on success or when nothing was
    decided in time (then the request's own timeout speaks)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not monitor.poll(int(left * 1000) + 1):
            break
        decided, message = _verdict(_event(monitor.recv_multipart()))
        if decided:
            return message
    return None


async def watch_handshake_async(monitor: zmq.asyncio.Socket, timeout: float = 2.0) -> str | None:
    """:func:`watch_handshake` for an asyncio monitor socket."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            while True:
                frames = await monitor.recv_multipart()
                decided, message = _verdict(_event(frames))
                if decided:
                    return message
    except TimeoutError:
        return None
