"""The broker's socket layer: one ROUTER for clients and workers around :class:`BrokerCore`.

Deliberately thin and cheap per message: it waits for the socket's readiness on the event
loop, drains messages with non-blocking reads in batches (a bare ``await recv_multipart()``
per message costs about twice the CPU), feeds them to the core and sends what the core
queued. ROUTER sends never block: a message for a peer whose pipe is full waits in a bounded
per-peer backlog and is retried on later drains and ticks (``plantd.broker.backlog``); one to
a peer with no connection is reported to the core (ROUTER_MANDATORY), which drops that worker
and re-queues the request. The core's rate-limited warnings are logged on each tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import zmq

from plantd import tracing
from plantd.broker.backlog import Backlog
from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.protocol import mdp
from plantd.security.settings import ServerSecurity, server_security
from plantd.transport import NOBLOCK, readable, recv_frames, recv_frames_from, send_frames

if TYPE_CHECKING:
    from plantd.broker.guard import BrokerGuard

log = logging.getLogger("plantd.broker")

#: pending connections the kernel queues for the ROUTER (libzmq's default is 100)
LISTEN_BACKLOG = 4096
#: messages handled per wake-up before yielding to the event loop
BATCH = 256
#: libzmq drops a peer's connection above MAXMSGSIZE: keep it far above our limit so an
#: oversized message reaches the core, which answers it (413) and keeps the peer
MAXMSGSIZE_FACTOR = 64


class BrokerServer:
    """Runs a :class:`BrokerCore` on a bound ROUTER socket until ``stop`` is set."""

    def __init__(
        self,
        settings: BrokerSettings,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        security: ServerSecurity | None = None,
        guard: BrokerGuard | None = None,
    ) -> None:
        """``security`` defaults to the process's (``PLANTD_SECURITY``, the keyring of
        ``$PLANTD_HOME``); with security on, a ``guard`` (shared with the bus proxies of
        the same context) is made here unless given, on a context of its own."""
        self.settings = settings
        self.core = BrokerCore(settings)
        self.core.tracing = tracing.current()  # None unless PLANTD_TRACING/OTEL_* switch it on
        self._owns_guard = False
        if guard is None:
            security = server_security() if security is None else security
            if security.secure:
                from plantd.broker.guard import BrokerGuard

                context = context or zmq.Context()  # its own: one ZAP handler per context
                guard = BrokerGuard(
                    security,
                    context,
                    rate_limit=settings.rate_limit,
                    rate_burst=settings.rate_burst,
                )
                self._owns_guard = True
        self.guard = guard
        self.security = guard.security if guard is not None else (security or ServerSecurity())
        if guard is not None:
            self.core.authorize = guard.access.authorize
            context = guard.context
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self.bound_endpoint: str | None = None
        self.ready = asyncio.Event()
        self.backlog = Backlog(settings.max_backlog_bytes)

    def bind(self) -> str:
        """Bind the ROUTER (separately from :meth:`run` so callers see bind errors early)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # a send to a routing id with no connection raises EHOSTUNREACH instead of vanishing:
        # how the broker learns at once that a worker died (see BrokerCore.unroutable)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes * MAXMSGSIZE_FACTOR)
        # thousands of workers reconnect at once after a broker restart: with libzmq's default
        # listen backlog (100) the kernel drops their SYNs, each retried a second or more later,
        # and a CLI probing the endpoint meanwhile reports it unreachable (the kernel caps this
        # at net.core.somaxconn)
        sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        try:
            if self.guard is not None:
                self.guard.start()  # before the bind: fail closed
                self.guard.apply(sock, self.settings.endpoint)
            else:
                self.security.apply(sock, self.settings.endpoint)  # refuses a public bind
            sock.bind(self.settings.endpoint)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.bound_endpoint

    async def run(self, stop: asyncio.Event) -> None:
        if self._sock is None:
            self.bind()
        sock = self._sock
        assert sock is not None
        loop = self._loop = asyncio.get_running_loop()
        fd = sock.fileno()  # zmq.FD, typed as the int it is
        loop.add_reader(fd, self._drain)
        log.info("broker listening on %s", self.bound_endpoint)
        self.ready.set()
        tick = min(0.1, self.settings.heartbeat_interval / 4)
        core = self.core
        try:
            self._drain()  # messages that arrived before the reader was registered
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), tick)
                except TimeoutError:
                    pass
                now = time.monotonic()
                core.tick(now)
                self._expire_backlog(now)
                for line in core.alerts.due(now):
                    log.warning("%s", line)
                self._drain()  # sends what tick queued, retries the backlog, catches a missed edge
        finally:
            loop.remove_reader(fd)
            sock.close(linger=0)
            self._sock = None
            if self._owns_guard and self.guard is not None:
                self.guard.stop()
                self._ctx.destroy(linger=0)  # the context made for this guard
            log.info("broker stopped")

    def _drain(self) -> None:
        """Read up to BATCH messages without blocking, route them, send the results."""
        self._scheduled = False
        sock = self._sock
        if sock is None:
            return
        handle = self.core.handle
        now = time.monotonic()
        budget = BATCH
        guard = self.guard
        if guard is not None:
            guard.refresh()  # revocations and policy edits: effective from this batch on
            origin = guard.origin
        # keep draining while messages keep arriving: every round saved is an event-loop
        # wake-up (epoll + callback) saved, the largest cost per request after the syscalls
        while budget and readable(sock):
            while budget and readable(sock):
                if guard is None:
                    frames = recv_frames(sock, NOBLOCK)
                    handle(frames[0], frames[1:], now)
                else:
                    frames, user, peer = recv_frames_from(sock, NOBLOCK)
                    handle(frames[0], frames[1:], now, origin(user, peer))
                budget -= 1
            self._flush()
            now = time.monotonic()
        self._flush()
        # the FD is edge-triggered: if messages remain (batch cut, or a send consumed the
        # edge), nobody will wake us, so schedule another drain ourselves
        if readable(sock) and not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._drain)

    def _flush(self) -> None:
        outbox = self.core.outbox
        waiting = self.backlog.waiting
        if not outbox and not waiting:
            return
        sock = self._sock
        if sock is None:
            outbox.clear()
            return
        now = time.monotonic()
        if waiting:
            self._retry_backlog(sock, now)
        while outbox:  # unroutable() may queue the request again for another worker
            batch = outbox[:]
            outbox.clear()
            for msg in batch:
                if waiting and msg[0] in waiting:  # keep the peer's order
                    self._hold(msg, now)
                    continue
                try:
                    send_frames(sock, msg, NOBLOCK)
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.EHOSTUNREACH:
                        self.core.unroutable(msg, now)
                    elif exc.errno == zmq.EAGAIN:  # the peer's pipe is full: send it later
                        self._hold(msg, now)
                    else:
                        self.core.undeliverable(msg, str(exc))

    def _hold(self, msg: list[bytes], now: float) -> None:
        if mdp.is_worker_heartbeat(msg[1:]):
            return  # nothing to keep: a full pipe will carry the next one, any traffic counts
        if self.backlog.hold(msg, now):
            self.core.counters.backlogged += 1
        else:
            self.core.undeliverable(msg, "backlog full (peer not reading)")

    def _retry_backlog(self, sock: zmq.Socket[bytes], now: float) -> None:
        """Send each waiting peer's messages in order until its pipe is full again."""
        backlog = self.backlog
        for peer, held in backlog.peers():
            while held:
                msg = held[0]
                try:
                    send_frames(sock, msg, NOBLOCK)
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.EAGAIN:
                        break
                    rest = backlog.drop(peer)
                    if exc.errno == zmq.EHOSTUNREACH:
                        self.core.unroutable(rest.pop(0), now)
                    for lost in rest:
                        self.core.undeliverable(lost, str(exc))
                    break
                backlog.sent(peer, now)

    def _expire_backlog(self, now: float) -> None:
        """Give up on peers that took nothing for ``max_wait``: they stopped reading."""
        for peer in self.backlog.stalled(now, self.settings.max_wait):
            for msg in self.backlog.drop(peer):
                self.core.undeliverable(msg, f"peer took nothing for {self.settings.max_wait:g}s")
