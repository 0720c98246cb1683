"""Publisher and subscriber helpers for the plantd buses: multipart ``[topic, JSON]``.

Both take one bus endpoint or several (comma-separated, one per broker): a publisher sends
every message to every broker's bus (a PUB socket connected to each), a subscriber listens
to all of them and delivers each message once (:mod:`plantd.client.dedup`), so a bus keeps
working while one broker is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import zmq
import zmq.asyncio

from plantd.client.dedup import BusDedup
from plantd.client.secure import resolve
from plantd.config import parse_endpoints
from plantd.protocol import jsoncodec
from plantd.security.settings import ClientSecurity
from plantd.transport import NOBLOCK, send_frames

log = logging.getLogger("plantd.bus")

#: at most one warning about bus gaps per subscriber this often (seconds)
GAP_WARNING_EVERY = 10.0


def encode_event(topic: str, doc: Any) -> list[bytes]:
    return [topic.encode(), jsoncodec.dumps(doc, default=str)]


class Publisher:
    """Publishes to a bus frontend (the proxy's XSUB). Never blocks: at the high-water mark
    ZeroMQ drops, which is why plantd payloads carry sequence numbers where loss matters."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        hwm: int = 10000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoint, "bus endpoint")
        self.endpoint = ",".join(self.endpoints)
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        resolve(security).apply(self._sock)
        for e in self.endpoints:  # PUB sends each message to every connected bus
            self._sock.connect(e)
        self.sent = 0
        self.dropped = 0

    def publish_nowait(self, topic: str, doc: Any) -> bool:
        """Publish from sync code (logging handlers); False if the message was dropped."""
        try:
            send_frames(self._sock, encode_event(topic, doc), NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    async def publish(self, topic: str, doc: Any) -> bool:
        return self.publish_nowait(topic, doc)

    def close(self) -> None:
        self._sock.close(linger=0)


class Subscriber:
    """Subscribes to a bus backend (the proxy's XPUB) for topic prefixes; to every broker's
    when given several, delivering each message once. ``dedup`` counts the copies dropped
    and the gaps in sequence-numbered streams (log records' ``seq``), also with one broker."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        topics: Iterable[str] = ("",),
        *,
        hwm: int = 10000,
        context: zmq.asyncio.Context | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoint, "bus endpoint")
        self.endpoint = ",".join(self.endpoints)
        several = len(self.endpoints) > 1
        self.dedup = BusDedup(window=256 if several else 0, by_content=several)
        self._gaps_told = 0
        self._told_at = 0.0
        self._sock = (context or zmq.asyncio.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        resolve(security).apply(self._sock)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for e in self.endpoints:
            self._sock.connect(e)

    async def recv(self, timeout: float | None = None) -> tuple[str, Any]:
        """Next ``(topic, document)``; raises TimeoutError after ``timeout`` seconds (with
        several brokers, copies do not count as messages)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not await self._sock.poll(left * 1000):
                    raise TimeoutError(f"no message on {self.endpoint} within {timeout:g}s")
            frames = await self._sock.recv_multipart()
            payload = frames[1] if len(frames) > 1 else b""
            try:
                doc = jsoncodec.loads(payload) if len(frames) > 1 else None
            except ValueError:
                doc = payload.decode("utf-8", "replace")
            fresh = self.dedup.accept(frames[0], payload, doc)
            if self.dedup.gaps != self._gaps_told:
                self._tell_gaps()
            if fresh:
                return frames[0].decode("utf-8", "replace"), doc

    def _tell_gaps(self) -> None:
        now = time.monotonic()
        if now - self._told_at < GAP_WARNING_EVERY:
            return
        log.warning(
            "bus %s: %d message(s) missing by sequence number (%d since the last warning)",
            self.endpoint,
            self.dedup.gaps,
            self.dedup.gaps - self._gaps_told,
        )
        self._gaps_told, self._told_at = self.dedup.gaps, now

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        return await self.recv()

    def close(self) -> None:
        self._sock.close(linger=0)
