"""Publisher and subscriber helpers for the plantd buses: multipart ``[topic, JSON]``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zmq
import zmq.asyncio

from plantd.client.secure import resolve
from plantd.protocol import jsoncodec
from plantd.security.settings import ClientSecurity
from plantd.transport import NOBLOCK, send_frames


def encode_event(topic: str, doc: Any) -> list[bytes]:
    return [topic.encode(), jsoncodec.dumps(doc, default=str)]


class Publisher:
    """Publishes to a bus frontend (the proxy's XSUB). Never blocks: at the high-water mark
    ZeroMQ drops, which is why plantd payloads carry sequence numbers where loss matters."""

    def __init__(
        self,
        endpoint: str,
        *,
        hwm: int = 10000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        resolve(security).apply(self._sock)
        self._sock.connect(endpoint)
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
    """Subscribes to a bus backend (the proxy's XPUB) for topic prefixes."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str] = ("",),
        *,
        hwm: int = 10000,
        context: zmq.asyncio.Context | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._sock = (context or zmq.asyncio.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        resolve(security).apply(self._sock)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(endpoint)

    async def recv(self, timeout: float | None = None) -> tuple[str, Any]:
        """Next ``(topic, document)``; raises TimeoutError after ``timeout`` seconds."""
        if timeout is not None and not await self._sock.poll(timeout * 1000):
            raise TimeoutError(f"no message on {self.endpoint} within {timeout:g}s")
        frames = await self._sock.recv_multipart()
        topic = frames[0].decode("utf-8", "replace")
        try:
            doc = jsoncodec.loads(frames[1]) if len(frames) > 1 else None
        except ValueError:
            doc = frames[1].decode("utf-8", "replace")
        return topic, doc

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        return await self.recv()

    def close(self) -> None:
        self._sock.close(linger=0)
