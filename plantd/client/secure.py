"""A client socket's security: CURVE options from the process's settings and the verdict of
its handshake, so a refused key says so within a moment instead of a silent timeout.

A failed CURVE handshake never raises in libzmq (security-notes trap 4): an unknown key
gets HANDSHAKE_FAILED_AUTH and no retry, a wrong broker key HANDSHAKE_FAILED_NO_DETAIL
and retries forever. :class:`Handshake` reads the socket monitor until the first verdict
and turns a failure into :class:`~plantd.client.errors.AuthenticationFailed`; once the
handshake succeeded the monitor is closed and the socket costs nothing more.
"""

from __future__ import annotations

from typing import Any

import zmq

from plantd.client import errors
from plantd.exitcodes import ExitCode
from plantd.security.settings import ClientSecurity, default_client


def resolve(security: ClientSecurity | None) -> ClientSecurity:
    """``security``, or the process default (``plantd.security.settings``)."""
    if security is not None:
        return security
    try:
        return default_client()
    except errors.PlantdError:
        raise
    except Exception as exc:  # no keyring, unsafe key file: their own one-line message
        raise _SecurityUnavailable(exc) from None


class _SecurityUnavailable(errors.PlantdError):
    """The process's keys could not be loaded (keeps the cause's message and exit code)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.exit_code = getattr(cause, "exit_code", ExitCode.AUTH)


class Handshake:
    """Watches one socket's handshake (open before connect) until it is decided."""

    __slots__ = ("_reader", "_socket", "monitor")

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        from plantd.security.curve import open_handshake_monitor

        self._socket = socket
        self.monitor: Any = open_handshake_monitor(socket)
        # an asyncio socket's monitor is an asyncio socket: read it through a plain shadow
        self._reader: zmq.Socket[Any] = (
            self.monitor
            if type(self.monitor) is zmq.Socket
            else zmq.Socket.shadow(self.monitor.underlying)
        )

    def check(self) -> bool:
        """True once the handshake succeeded (the monitor is then closed); raises
        AuthenticationFailed on a failed one; False while undecided."""
        from plantd.security.curve import read_verdict

        decided, message = read_verdict(self._reader)
        if message is not None:
            self.close()
            raise errors.AuthenticationFailed(message)
        if decided:
            self.close()
        return decided

    def close(self) -> None:
        """Stop monitoring, then close the monitor's end. In this order: libzmq's I/O thread
        sends each later event (a reconnect's handshake) to the monitor PAIR and blocks
        when nobody is at the other end, stalling every socket of the context."""
        if self.monitor.closed:
            return
        if not self._socket.closed:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
        self.monitor.close(linger=0)


def secure_socket(
    socket: zmq.Socket[Any], security: ClientSecurity, endpoint: str
) -> Handshake | None:
    """Apply ``security`` to ``socket`` and connect it to ``endpoint``; the handshake to
    watch (None with security off)."""
    security.apply(socket)
    watch = Handshake(socket) if security.secure else None
    socket.connect(endpoint)
    return watch
