"""Async Majordomo client (RFC 18) for daemons, the TUI and scripts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from plantd.client import errors
from plantd.client.reply import (
    DEFAULT_ENDPOINT,
    call_body,
    check_reply,
    decode_document,
    probe_async,
    service_name,
    timeout_error,
)
from plantd.client.sync import MAX_PAGES, next_cursor, page_body
from plantd.protocol import mdp
from plantd.transport import NOBLOCK, recv_frames, send_frames

#: idle sockets kept for reuse; more concurrent requests open more, then close the surplus
POOL_SIZE = 16


class Client:
    """Async client; safe for concurrent requests.

    RFC 18 replies carry no request id, so each in-flight request owns a DEALER socket from a
    small pool. A socket whose request timed out is closed, never reused: a late reply can
    never be handed to the next request.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 5.0,
        retries: int = 0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.asyncio.Context.instance()
        self._pool: list[zmq.asyncio.Socket] = []
        self._closed = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for sock in self._pool:
            sock.close(linger=0)
        self._pool.clear()

    def _take(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise errors.PlantdError("client is closed")
        if self._pool:
            return self._pool.pop()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def _give_back(self, sock: zmq.asyncio.Socket) -> None:
        if self._closed or len(self._pool) >= POOL_SIZE:
            sock.close(linger=0)
        else:
            self._pool.append(sock)

    async def stream(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> AsyncIterator[list[bytes]]:
        """Yield each reply part's body: the PARTIALs, then the FINAL.

        ``timeout`` bounds the wait for each part. A request is retried (``retries``) only
        if nothing was received for it yet.
        """
        name = service_name(service)
        wait = self.timeout if timeout is None else timeout
        request = mdp.encode_request(name, list(body))
        for attempt in range(self.retries + 1):
            sock = self._take()
            received = False
            ok = False
            try:
                try:
                    send_frames(sock, request, NOBLOCK)
                except zmq.Again:
                    await sock.send_multipart(request)
                while True:
                    deadline = time.monotonic() + wait
                    reply = None
                    while reply is None:
                        left = deadline - time.monotonic()
                        if left <= 0 or not await sock.poll(left * 1000):
                            raise TimeoutError
                        reply = check_reply(recv_frames(sock, NOBLOCK), name)
                    received = True
                    if reply.final:
                        ok = True
                        yield reply.body
                        return
                    yield reply.body
            except TimeoutError:
                if received or attempt >= self.retries:
                    reason = await probe_async(self.endpoint)
                    raise timeout_error(self.endpoint, name, wait, reason) from None
            finally:
                if ok:
                    self._give_back(sock)
                else:
                    sock.close(linger=0)

    async def request(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> list[bytes]:
        """Send one request; return the FINAL reply's body frames (PARTIALs are skipped)."""
        last: list[bytes] = []
        async for part in self.stream(service, *body, timeout=timeout):
            last = part
        return last

    async def call(
        self, service: str, operation: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Request ``[operation, JSON]`` and return the reply's JSON document.

        Raises :class:`~plantd.client.errors.RequestRejected` for ``{"success": false}``.
        """
        body = await self.request(service, *call_body(operation, payload), timeout=timeout)
        return decode_document(body)

    async def mmi(self, name: str, *body: bytes, timeout: float | None = None) -> Any:
        """Call a JSON MMI extension (``mmi.services``, ``mmi.workers``, ``mmi.broker``)."""
        reply = await self.request(name, *body, timeout=timeout)
        return decode_document(reply)

    async def mmi_all(self, name: str, *, timeout: float | None = None) -> dict[str, list[Any]]:
        """Every entry of a paged MMI listing (``mmi.workers``, ``mmi.services``), following
        the pages: ``{"workers": [...]}`` as one unpaged reply would be."""
        key = name.removeprefix("mmi.")
        entries: list[Any] = []
        after = None
        for _ in range(MAX_PAGES):
            doc = await self.mmi(name, *page_body(after), timeout=timeout)
            entries.extend(doc.get(key, []) if isinstance(doc, dict) else [])
            after = next_cursor(doc, after)
            if after is None:
                break
        return {key: entries}

    async def mmi_service(self, service: str, *, timeout: float | None = None) -> str:
        """RFC 8 ``mmi.service``: ``"200"`` if a worker serves ``service``, else ``"404"``."""
        reply = await self.request("mmi.service", service.encode(), timeout=timeout)
        return reply[-1].decode() if reply else ""

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time to the broker in seconds (an ``mmi.service`` request)."""
        start = time.perf_counter()
        await self.request("mmi.service", b"mmi.ping", timeout=timeout)
        return time.perf_counter() - start
