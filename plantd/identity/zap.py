"""CURVE + ZAP glue for the enforcement to come: server/client socket setup, an authenticator
that turns a public key into a principal name, and a handshake watcher for clients.

Fail closed (security-notes trap 1): :func:`configure_curve_server` always sets a ZAP domain
and ``ZAP_ENFORCE_DOMAIN``, so a server whose authenticator is not running refuses every
client instead of accepting any key. Start the authenticator before the first bind.

The authenticator only decides at the handshake: a reload (after a revocation) affects NEW
connections. Per-message authorization (revocation on live connections) is the broker's job,
using the ``User-Id`` frame property this authenticator sets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from plantd.identity.keys import KeyPair

#: the ZAP domain of every plantd CURVE server socket (client and authenticator agree on it)
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


class PrincipalAuthenticator(AsyncioAuthenticator):
    """ZAP handler: a client key is accepted when it belongs to an active principal, and its
    connection's ``User-Id`` is that principal's name.

    ``load`` returns the current key -> name table (e.g. ``{k: p.name for k, p in
    Registry.active_keys().items()}``); :meth:`reload` calls it again.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        load: Callable[[], Mapping[str, str]],
        domain: str = DOMAIN,
    ) -> None:
        super().__init__(context)
        self._load = load
        self._names: Mapping[str, str] = dict(load())
        self.domain = domain
        self.configure_curve_callback(domain, credentials_provider=self)

    def reload(self) -> None:
        """Re-read the key table: revoked keys are refused from the next handshake on."""
        self._names = dict(self._load())

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """pyzmq's credentials-provider hook: is this key allowed in ``domain``?"""
        return domain == self.domain and z85_key.decode("ascii") in self._names

    def curve_user_id(self, client_public_key: bytes) -> str:
        # "" if the key was dropped by a reload between callback and here: no principal
        return self._names.get(z85.encode(client_public_key).decode("ascii"), "")


_VERDICTS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: AUTH_REJECTED,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: KEY_MISMATCH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: PROTOCOL_MISMATCH,
}
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | sum(_VERDICTS)


def open_handshake_monitor(socket: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """A monitor of the handshake events of ``socket`` (call before connect)."""
    return socket.get_monitor_socket(_WATCHED)


def _verdict(event: int) -> tuple[bool, str | None]:
    """(decided, message): success decides with None, a failure with its message."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return True, None
    if event in _VERDICTS:
        return True, _VERDICTS[event]
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
        decided, message = _verdict(parse_monitor_message(monitor.recv_multipart())["event"])
        if decided:
            return message
    return None


async def watch_handshake_async(monitor: zmq.asyncio.Socket, timeout: float = 2.0) -> str | None:
    """:func:`watch_handshake` for an asyncio monitor socket."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                frames = await monitor.recv_multipart()
                decided, message = _verdict(parse_monitor_message(frames)["event"])
                if decided:
                    return message
    except TimeoutError:
        return None
