"""Peers that behave like the ZeroMQ Guide's MDP/0.1 examples, written from the frame tables
in ../shared/mdp-dialects.md (RFC 7), and a raw RFC 18 worker that misbehaves on purpose.

- :class:`GuideSyncClient` is the Guide's ``mdcliapi``: REQ-like, send, wait ``timeout``
  (2.5 s), on silence close the socket, reopen it and resend, ``retries`` (3) times.
- :func:`guide_async_burst` is the Guide's ``mdclient2``: one DEALER sends the whole burst,
  then receives, each receive bounded by the timeout; returns the replies it got.
- :func:`mdp01_worker` is the Guide's ``mdworker`` echo service (heartbeats, reconnects on
  DISCONNECT); a sleepy one sleeps on ``[b"sleep", seconds]`` (to be killed mid-request).
- :func:`rfc18_big_worker` replies with as many bytes as asked: ``[b"big", n]`` one FINAL
  of ``n`` bytes; ``[b"bigpart", n]`` a PARTIAL of ``n`` bytes, two small PARTIALs, a FINAL.
"""

from __future__ import annotations

import signal
import sys
import time

import zmq

MDPC01, MDPW01 = b"MDPC01", b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


def _dealer(endpoint: str, rcvhwm: int | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    from plantd.security.settings import default_client

    default_client().apply(sock)  # CURVE keys of this process (none when insecure)
    sock.connect(endpoint)
    return sock


class GuideSyncClient:
    """The Guide's synchronous MDP/0.1 client: timeout, then close, reopen and resend."""

    def __init__(self, endpoint: str, timeout: float = 2.5, retries: int = 3) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self.attempts = 0
        self.sock = _dealer(endpoint)

    def send(self, service: bytes, *body: bytes) -> list[bytes] | None:
        """The reply body, or ``None`` after all retries (as the Guide's returns NULL)."""
        for _ in range(self.retries):
            self.attempts += 1
            self.sock.send_multipart([b"", MDPC01, service, *body])
            if self.sock.poll(self.timeout * 1000):
                msg = self.sock.recv_multipart()
                assert msg[:3] == [b"", MDPC01, service], msg
                return msg[3:]
            self.sock.close(0)  # a late reply must not reach the next attempt
            self.sock = _dealer(self.endpoint)
        return None

    def close(self) -> None:
        self.sock.close(0)


def guide_async_burst(
    endpoint: str,
    service: bytes,
    count: int,
    timeout: float = 2.5,
    rcvhwm: int | None = None,
    pause: float = 0.0,
    pad: int = 0,
) -> list[bytes]:
    """Send ``count`` requests ``[b"%d" % i]`` on one socket, then receive until ``count``
    replies or ``timeout`` of silence; ``pause`` waits before reading (a slow reader);
    ``pad`` bytes go in a frame before the number. Returns the replies' last frames."""
    sock = _dealer(endpoint, rcvhwm)
    padding = [b"x" * pad] if pad else []
    try:
        for i in range(count):
            sock.send_multipart([b"", MDPC01, service, *padding, b"%d" % i])
        if pause:
            time.sleep(pause)
        bodies: list[bytes] = []
        while len(bodies) < count and sock.poll(timeout * 1000):
            msg = sock.recv_multipart()
            assert msg[:3] == [b"", MDPC01, service], msg
            bodies.append(msg[-1])
        return bodies
    finally:
        sock.close(0)


def mdp01_worker(
    endpoint: str, service: bytes, heartbeat: float = 0.2, sleepy: bool = False
) -> None:
    """The Guide's echo worker (MDP/0.1); runs until SIGTERM. Only a ``sleepy`` one honours
    ``sleep`` requests (so a retry of one reaches a quick worker)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = _dealer(endpoint)
    sock.send_multipart([b"", MDPW01, READY, service])
    next_beat = time.monotonic() + heartbeat
    while True:
        if sock.poll(heartbeat * 1000):
            msg = sock.recv_multipart()
            cmd = msg[2]
            if cmd == REQUEST:
                client, body = msg[3], msg[5:]
                if sleepy and body[:1] == [b"sleep"]:
                    time.sleep(float(body[1]))
                sock.send_multipart([b"", MDPW01, REPLY, client, b"", *body])
            elif cmd == DISCONNECT:
                sock.close(0)
                sock = _dealer(endpoint)
                sock.send_multipart([b"", MDPW01, READY, service])
        if time.monotonic() >= next_beat:
            sock.send_multipart([b"", MDPW01, HEARTBEAT])
            next_beat = time.monotonic() + heartbeat


def rfc18_big_worker(endpoint: str, service: bytes, heartbeat: float = 0.2) -> None:
    """An RFC 18 worker that sends replies over the broker's limit when asked to."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = _dealer(endpoint)
    sock.send_multipart([b"MDPW02", b"\x01", service])
    next_beat = time.monotonic() + heartbeat
    while True:
        if sock.poll(heartbeat * 1000):
            msg = sock.recv_multipart()
            if msg[1] == b"\x02":
                client, body = msg[2], msg[4:]
                head = [b"MDPW02", b"\x04", client, b""]
                if body[:1] == [b"big"]:
                    sock.send_multipart([*head, b"x" * int(body[1])])
                elif body[:1] == [b"bigpart"]:
                    part = [b"MDPW02", b"\x03", client, b""]
                    sock.send_multipart([*part, b"x" * int(body[1])])
                    sock.send_multipart([*part, b"small 1"])
                    sock.send_multipart([*part, b"small 2"])
                    sock.send_multipart([*head, b"done"])
                else:
                    sock.send_multipart([*head, *body])
        if time.monotonic() >= next_beat:
            sock.send_multipart([b"MDPW02", b"\x05"])
            next_beat = time.monotonic() + heartbeat
