"""Async Majordomo client (RFC 18) for daemons, the TUI and scripts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from plantd.client import errors
from plantd.client.exchange import Exchange, MmiListing, decode_mmi
from plantd.client.failover import PROBE_EVERY, BrokerDied, Brokers
from plantd.client.reply import (
    DEFAULT_ENDPOINT,
    call_body,
    decode_document,
    probe_async,
    timeout_error,
)
from plantd.client.secure import Handshake, resolve, secure_socket
from plantd.config import parse_endpoints
from plantd.security.caller import acting_principal
from plantd.transport import NOBLOCK, recv_frames, send_frames

if TYPE_CHECKING:
    from plantd.protocol.mmi import BrokerStatus, ServiceEntry, WorkerEntry
    from plantd.security.settings import ClientSecurity

#: idle sockets kept for reuse; more concurrent requests open more, then close the surplus
POOL_SIZE = 16


class Client:
    """Async client; safe for concurrent requests.

    RFC 18 replies carry no request id, so each in-flight request owns a DEALER socket from a
    small pool. A socket whose request timed out is closed, never reused: a late reply can
    never be handed to the next request.

    ``endpoint`` may name several brokers (a comma-separated string or a sequence): requests
    go to one that answers, and move to the next when it dies or times out
    (:mod:`plantd.client.failover`), resent there if nothing was received yet.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        timeout: float = 5.0,
        retries: int = 0,
        context: zmq.asyncio.Context | None = None,
        security: ClientSecurity | None = None,
        brokers: Brokers | None = None,
    ) -> None:
        #: the brokers, and which one is in use (``brokers.states()`` for the console); a
        #: caller replacing its client passes the old one's on, keeping what it learnt
        self.brokers = brokers or Brokers(parse_endpoints(endpoint, "endpoint"))
        #: None: the process default (plantd.security.settings), resolved on first use
        self.security = security
        #: sockets whose CURVE handshake is not decided yet
        self._handshakes: dict[zmq.asyncio.Socket, Handshake] = {}
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.asyncio.Context.instance()
        self._pools: dict[str, list[zmq.asyncio.Socket]] = {e: [] for e in self.brokers.endpoints}
        self._closed = False

    @property
    def endpoint(self) -> str:
        """The broker in use."""
        return self.brokers.current

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.brokers.endpoints

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for sock in pool:
                self._discard(sock)
            pool.clear()

    def _take(self, endpoint: str) -> zmq.asyncio.Socket:
        if self._closed:
            raise errors.PlantdError("client is closed")
        pool = self._pools[endpoint]
        if pool:
            return pool.pop()
        self.security = security = resolve(self.security)
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        watch = secure_socket(sock, security, endpoint)
        if watch is not None:
            self._handshakes[sock] = watch
        return sock

    def _give_back(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        pool = self._pools[endpoint]
        if self._closed or len(pool) >= POOL_SIZE:
            self._discard(sock)
        else:
            pool.append(sock)

    def _discard(self, sock: zmq.asyncio.Socket) -> None:
        watch = self._handshakes.pop(sock, None)
        if watch is not None:
            watch.close()
        sock.close(linger=0)

    async def _wait(self, sock: zmq.asyncio.Socket, seconds: float) -> bool:
        """Wait for a reply; while the handshake is undecided, also for its verdict (a
        refused key raises AuthenticationFailed at once instead of timing out)."""
        watch = self._handshakes.get(sock)
        if watch is None:
            return bool(await sock.poll(seconds * 1000))
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(watch.monitor, zmq.POLLIN)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(await poller.poll(left * 1000))
            if watch.monitor in ready:
                try:
                    decided = watch.check()
                except errors.AuthenticationFailed:
                    del self._handshakes[sock]
                    raise
                if decided:
                    del self._handshakes[sock]
                    return bool(ready.get(sock)) or bool(
                        await sock.poll(max(0.0, deadline - time.monotonic()) * 1000)
                    )
            if sock in ready:
                return True
        return False

    async def stream(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> AsyncIterator[list[bytes]]:
        """Yield each reply part's body: the PARTIALs, then the FINAL.

        ``timeout`` bounds the wait for each part. A request is retried (``retries``), or
        resent through the next broker when its broker died or timed out (once per other
        broker), only if nothing was received for it yet. Inside
        ``plantd.security.caller.acting_for(P)`` the request is sent on behalf of principal
        P (the broker checks we may).
        """
        ex = Exchange(
            service,
            body,
            timeout=self.timeout if timeout is None else timeout,
            retries=self.retries,
            failovers=len(self.brokers.endpoints) - 1,
            acting_for=acting_principal(),
        )
        brokers = self.brokers
        error: BaseException | None = None
        try:
            while True:
                endpoint, wait = brokers.pick(time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                sock = self._take(endpoint)
                ok = False
                try:
                    try:
                        send_frames(sock, ex.request, NOBLOCK)
                    except zmq.Again:
                        await sock.send_multipart(ex.request)
                    ex.sent(time.monotonic())
                    while True:
                        left = ex.time_left(time.monotonic())
                        if left <= 0:
                            raise TimeoutError
                        if brokers.several and left > PROBE_EVERY:
                            if not await self._wait(sock, PROBE_EVERY):
                                reason = await probe_async(endpoint)
                                if reason is not None:
                                    raise BrokerDied(reason)
                                continue
                        elif not await self._wait(sock, left):
                            raise TimeoutError
                        frames = recv_frames(sock, NOBLOCK)
                        brokers.succeeded(endpoint)
                        reply = ex.received_frames(frames, time.monotonic())
                        if reply is None:
                            continue
                        if reply.final:
                            ok = True
                            yield reply.body
                            return
                        yield reply.body
                except (TimeoutError, BrokerDied) as exc:
                    reason = exc.reason if isinstance(exc, BrokerDied) else None
                    if brokers.several:
                        reason = reason or await probe_async(endpoint)
                        brokers.failed(endpoint, time.monotonic(), reason or "no reply in time")
                        if ex.failover():
                            continue
                    if not ex.timed_out():
                        if reason is None and not brokers.several:
                            reason = await probe_async(endpoint)
                        raise timeout_error(endpoint, ex.service, ex.timeout, reason) from None
                finally:
                    if ok:
                        self._give_back(sock, endpoint)
                    else:
                        self._discard(sock)
        except BaseException as exc:
            error = exc
            raise
        finally:
            ex.finished(error)

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

    async def _listing(self, listing: MmiListing, timeout: float | None) -> MmiListing:
        while listing.add(await self.mmi(listing.name, *listing.body(), timeout=timeout)):
            pass
        return listing

    async def mmi_all(self, name: str, *, timeout: float | None = None) -> dict[str, list[Any]]:
        """Every entry of a paged MMI listing (``mmi.workers``, ``mmi.services``), following
        the pages: ``{"workers": [...]}`` as one unpaged reply would be."""
        return (await self._listing(MmiListing(name), timeout)).document()

    async def services(self, *, timeout: float | None = None) -> list[ServiceEntry]:
        """Every service the broker knows (``mmi.services``, all pages), decoded."""
        return (await self._listing(MmiListing("mmi.services", typed=True), timeout)).entries

    async def workers(self, *, timeout: float | None = None) -> list[WorkerEntry]:
        """Every connected worker (``mmi.workers``, all pages), decoded."""
        return (await self._listing(MmiListing("mmi.workers", typed=True), timeout)).entries

    async def broker_status(self, *, timeout: float | None = None) -> BrokerStatus:
        """``mmi.broker``, decoded."""
        status: BrokerStatus = decode_mmi(
            "decode_broker", await self.mmi("mmi.broker", timeout=timeout)
        )
        return status

    async def mmi_service(self, service: str, *, timeout: float | None = None) -> str:
        """RFC 8 ``mmi.service``: ``"200"`` if a worker serves ``service``, else ``"404"``."""
        reply = await self.request("mmi.service", service.encode(), timeout=timeout)
        return reply[-1].decode() if reply else ""

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time to the broker in seconds (an ``mmi.service`` request)."""
        start = time.perf_counter()
        await self.request("mmi.service", b"mmi.ping", timeout=timeout)
        return time.perf_counter() - start
