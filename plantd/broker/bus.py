"""Pub/sub bus proxies: publishers connect to the XSUB frontend, subscribers to the XPUB backend.

The Go plantd proxy delivered nothing because its frontend was a plain SUB that never
subscribed. XSUB forwards the subscriptions the XPUB side receives, so the proxy carries
exactly the topics somebody wants.

Insecure (``PLANTD_SECURITY=off``, loopback only) each proxy runs libzmq's own C proxy
(``zmq.proxy_steerable``) in a native thread that releases the GIL. Secure, both ends are
CURVE servers decided by the broker's ZAP handler (:class:`~plantd.broker.guard.BrokerGuard`)
and the proxy is a Python loop in its thread that checks the policy:

- the subscribe side is ``XPUB_MANUAL``: a subscription is applied (and passed upstream) only
  when its principal may ``@subscribe`` to that topic on ``@bus.<bus>``, so a forbidden
  subscription receives nothing;
- every published message is forwarded only when its principal may ``@publish`` that topic.

Decisions are cached per (principal, topic) until the guard reloads the authority. A PAIR
control socket stops either kind of proxy cleanly.

Revocation of a subscriber that is already connected: libzmq's XPUB has no per-peer
disconnect, and an applied subscription stays until its pipe closes. The proxy therefore
remembers, per connection (the TCP descriptor libzmq read the subscription from,
``ZMQ_SRCFD``, and its peer address), the principal and the topics it subscribed; when the
guard reloads (a revocation or policy edit; the broker checks at least every 100 ms) it
re-decides them and shuts down (``shutdown(2)``, libzmq closes it) each connection holding
a subscription no longer allowed. That subscriber reconnects, a revoked key is refused at the
handshake, a reduced one gets only the subscriptions still allowed; no other subscriber is
touched.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from plantd.broker.access import CACHE_LIMIT
from plantd.identity.policy import BUS_SERVICE_PREFIX, PUBLISH_OPERATION, SUBSCRIBE_OPERATION
from plantd.security.keys import BROKER
from plantd.security.settings import ServerSecurity, server_security
from plantd.transport import NOBLOCK, readable, recv_frames_from, send_frames
from plantd.vocabulary import BUSES

if TYPE_CHECKING:
    from plantd.broker.guard import BrokerGuard

log = logging.getLogger("plantd.bus")


@dataclass(frozen=True, slots=True)
class BusSpec:
    """A named bus and its two endpoints."""

    name: str
    frontend: str  # publishers connect here (XSUB binds)
    backend: str  # subscribers connect here (XPUB binds)


#: The buses of a plantd installation and their default endpoints (contract with upstream).
DEFAULT_BUSES = tuple(BusSpec(b.name, b.publish, b.subscribe) for b in BUSES)


class BusProxy:
    """One XSUB->XPUB proxy. ``start()`` binds (raising bind errors), ``stop()`` joins."""

    def __init__(
        self,
        name: str,
        frontend: str,
        backend: str,
        *,
        hwm: int = 10000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ServerSecurity | None = None,
        guard: BrokerGuard | None = None,
    ) -> None:
        """Secure with a ``guard`` (the broker's: its context and authenticator), or with
        ``security`` (default: the process's, ``PLANTD_SECURITY``) on a guard of its own."""
        self.name = name
        self.frontend = frontend
        self.backend = backend
        self.hwm = hwm
        self._owns_guard = False
        if guard is None:
            security = server_security() if security is None else security
            if security.secure:  # standalone: a guard (and context) of its own
                from plantd.broker.guard import BrokerGuard

                guard = BrokerGuard(security, zmq.Context())
                self._owns_guard = True
        self.guard = guard
        self.security = guard.security if guard is not None else (security or ServerSecurity())
        self._ctx = guard.context if guard is not None else (context or zmq.Context.instance())
        #: messages and subscriptions the policy refused
        self.denied_publish = 0
        self.denied_subscribe = 0
        #: subscriber connections shut down because the policy stopped allowing them
        self.evicted = 0
        self._thread: threading.Thread | None = None
        self._control_addr = f"inproc://plantd-bus-{name}-{id(self):x}"
        self._control: zmq.Socket[bytes] | None = None
        self._control_lock = threading.Lock()  # scrapes and stop() share the control socket
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        self._connected = {"publishers": 0, "subscribers": 0}
        #: the secure proxy loop counts here (libzmq's STATISTICS serves the plain proxy)
        self.counts = {"published": 0, "published_bytes": 0, "delivered": 0, "delivered_bytes": 0}
        self.bound_frontend: str | None = None
        self.bound_backend: str | None = None

    def start(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        ctl = self._ctx.socket(zmq.PAIR)
        for s in (xsub, xpub, ctl):
            s.setsockopt(zmq.LINGER, 0)
        xsub.setsockopt(zmq.RCVHWM, self.hwm)
        # a subscriber that stops reading loses messages at this mark instead of growing memory
        xpub.setsockopt(zmq.SNDHWM, self.hwm)
        guard = self.guard
        if guard is not None and self._owns_guard:
            guard.start()
        try:
            for sock, endpoint in ((xsub, self.frontend), (xpub, self.backend)):
                if guard is not None:
                    guard.apply(sock, endpoint)
                else:
                    self.security.apply(sock, endpoint)  # refuses a public bind
            if guard is not None:
                xpub.setsockopt(zmq.XPUB_MANUAL, 1)
            xsub.bind(self.frontend)
            xpub.bind(self.backend)
            ctl.bind(self._control_addr)
        except BaseException:
            for s in (xsub, xpub, ctl):
                s.close()
            raise
        self.bound_frontend = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.bound_backend = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        peer = self._ctx.socket(zmq.PAIR)
        peer.setsockopt(zmq.LINGER, 0)
        peer.connect(self._control_addr)
        self._control = peer
        # connections on each side, for /metrics (read by connections())
        self._monitors = {
            "publishers": self._monitor(xsub, "publishers"),
            "subscribers": self._monitor(xpub, "subscribers"),
        }

        def serve() -> None:
            try:
                if guard is None:
                    zmq.proxy_steerable(xsub, xpub, None, ctl)
                else:
                    _GuardedProxy(self, guard, xsub, xpub, ctl).run()
            except zmq.ZMQError as exc:  # context terminated
                log.debug("bus %s proxy ended: %s", self.name, exc)
            finally:
                for s in (xsub, xpub, ctl):
                    s.close(linger=0)

        self._thread = threading.Thread(target=serve, name=f"bus-{self.name}", daemon=True)
        self._thread.start()
        log.info("bus %s: %s -> %s", self.name, self.bound_frontend, self.bound_backend)

    @property
    def alive(self) -> bool:
        """The proxy thread is forwarding (false before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    def statistics(self) -> dict[str, int]:
        """Messages and bytes through the proxy (libzmq's STATISTICS): ``published`` (in from
        publishers), ``delivered`` (out to subscribers) and their ``_bytes``; {} if stopped."""
        if self.guard is not None:
            return dict(self.counts) if self.alive else {}
        with self._control_lock:
            if self._control is None or not self.alive:
                return {}
            self._control.send(b"STATISTICS")
            if not self._control.poll(1000):
                return {}
            frames = self._control.recv_multipart()
        values = [struct.unpack("=Q", f)[0] for f in frames]
        # frontend in (msgs, bytes), frontend out, backend in, backend out
        return {
            "published": values[0],
            "published_bytes": values[1],
            "delivered": values[6],
            "delivered_bytes": values[7],
        }

    def _monitor(self, sock: zmq.Socket[bytes], side: str) -> zmq.Socket[bytes]:
        """A PAIR receiving ``sock``'s accept/disconnect events. Its receive side has no
        high-water mark: libzmq sends monitor events from the proxy thread, which must never
        wait on a full pipe (the broker drains it every few seconds, see connections())."""
        addr = f"inproc://plantd-bus-{self.name}-{side}-{id(self):x}"
        sock.monitor(addr, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        monitor: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.setsockopt(zmq.RCVHWM, 0)
        monitor.connect(addr)
        return monitor

    def connections(self) -> dict[str, int]:
        """Connected ``publishers`` and ``subscribers`` now (from socket monitor events)."""
        for side, monitor in list(self._monitors.items()):
            while monitor.poll(0):
                # frame 1: u16 event, u32 value (parsed here: zmq.utils.monitor imports asyncio)
                (event,) = struct.unpack_from("=H", monitor.recv_multipart()[0])
                change = 1 if event == zmq.EVENT_ACCEPTED else -1
                self._connected[side] = max(0, self._connected[side] + change)
        return dict(self._connected)

    def stop(self, timeout: float = 2.0) -> None:
        with self._control_lock:
            self._stop_proxy(timeout)
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        self._monitors = {}

    def _stop_proxy(self, timeout: float) -> None:
        if self._control is not None:
            try:
                self._control.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
        if self._owns_guard and self.guard is not None:
            self.guard.stop()
            self.guard.context.destroy(linger=0)
            self._owns_guard = False


@dataclass(slots=True)
class _Subscriber:
    """What one subscriber connection subscribed, and as whom."""

    principal: str
    peer: Any  # getpeername() when the first subscription arrived: detects a reused fd
    topics: set[bytes] = field(default_factory=set)


def _peername(fd: int) -> Any:
    """The remote address of socket ``fd`` (None when it is not a connected socket)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getpeername()
    except OSError:
        return None


def _shutdown(fd: int, peer: Any) -> bool:
    """Shut down connection ``fd`` if it is still the one to ``peer`` (libzmq then closes it
    as a lost connection); False when the fd is gone or now another connection's."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.getpeername() != peer:
                return False
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


class _GuardedProxy:
    """The secure proxy loop of one bus (runs in the proxy's thread)."""

    #: messages forwarded per wake-up before the other sockets get a turn
    BURST = 1024
    #: how often (ms) the loop looks for a reload of the guard when no message wakes it
    REVIEW_MS = 100
    #: remembered subscriber connections before the closed ones are swept out
    SUBSCRIBER_LIMIT = 4096

    def __init__(
        self,
        proxy: BusProxy,
        guard: BrokerGuard,
        xsub: zmq.Socket[Any],
        xpub: zmq.Socket[Any],
        ctl: zmq.Socket[Any],
    ) -> None:
        self.proxy = proxy
        self.guard = guard
        self.service = BUS_SERVICE_PREFIX + proxy.name
        self.xsub, self.xpub, self.ctl = xsub, xpub, ctl
        self._generation = -1
        self._allowed: dict[tuple[str, str, bytes], bool] = {}
        #: subscriber connections by descriptor (ZMQ_SRCFD of their subscriptions)
        self._subscribers: dict[int, _Subscriber] = {}
        self._reviewed = guard.generation
        #: a standalone proxy's guard is refreshed here (the broker refreshes its own)
        self._refresh = proxy._owns_guard

    def allowed(self, principal: str, operation: str, topic: bytes) -> bool:
        """May ``principal`` publish/subscribe ``topic`` (cached until the guard reloads)."""
        if self.guard.generation != self._generation:
            self._generation = self.guard.generation
            self._allowed.clear()
        key = (principal, operation, topic)
        found = self._allowed.get(key)
        if found is not None:
            return found
        if len(self._allowed) >= CACHE_LIMIT:
            self._allowed.clear()
        text = topic.decode("utf-8", "replace")
        if principal == BROKER:
            found = True
        else:
            # a subscription is a prefix: it stands for every topic that starts with it
            decision = self.guard.authority.decide(
                principal,
                None,
                self.service,
                operation,
                key=text,
                key_prefix=operation == SUBSCRIBE_OPERATION,
            )
            found = bool(decision)
            if not found:
                log.warning(
                    "bus %s: principal '%s' may not %s topic '%s' (rule %s)",
                    self.proxy.name,
                    principal,
                    operation.lstrip("@"),
                    text,
                    decision.rule,
                )
        self._allowed[key] = found
        return found

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.xsub, self.xpub, self.ctl):
            poller.register(sock, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(self.REVIEW_MS))
            if self.ctl in ready and self.ctl.recv() == b"TERMINATE":
                return
            if self._refresh:
                self.guard.refresh()
            if self.guard.generation != self._reviewed:
                self._review()
            if self.xpub in ready or readable(self.xpub):
                self._subscriptions()
            if self.xsub in ready or readable(self.xsub):
                self._forward()

    def _subscriptions(self) -> None:
        """Apply each (un)subscription the policy allows and pass it upstream."""
        xpub = self.xpub
        while readable(xpub):
            frame = xpub.recv(NOBLOCK, copy=False)
            data = frame.bytes
            while frame.more:  # a subscription is one frame; drop anything else whole
                frame = xpub.recv(NOBLOCK, copy=False)
                data = b""
            if not data or data[0] not in (0, 1):
                continue
            subscribe = data[0] == 1
            topic = data[1:]
            try:
                user = str(frame.get("User-Id"))
            except zmq.ZMQError:
                user = ""  # no User-Id: libzmq's unsubscription for a subscriber that left
            if user:
                if not self.allowed(user, SUBSCRIBE_OPERATION, topic):
                    self.proxy.denied_subscribe += subscribe
                    continue
                # XPUB_MANUAL: applies to the pipe this message came from
                xpub.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
                self._remember(frame, user, topic, subscribe)
            self.xsub.send(data)

    def _remember(self, frame: zmq.Frame, user: str, topic: bytes, subscribe: bool) -> None:
        """Note which connection subscribed ``topic`` as ``user`` (for :meth:`_review`)."""
        try:
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, AttributeError):
            return  # a libzmq without SRCFD: revocation waits for the subscriber to leave
        found = self._subscribers.get(fd)
        if found is None or found.principal != user:
            peer = _peername(fd)
            if peer is None:
                return
            if found is None or found.peer != peer:  # a new connection (maybe a reused fd)
                if len(self._subscribers) >= self.SUBSCRIBER_LIMIT:
                    self._sweep()
                found = self._subscribers[fd] = _Subscriber(user, peer)
        if subscribe:
            found.topics.add(topic)
        else:
            found.topics.discard(topic)

    def _sweep(self) -> None:
        """Forget connections that are gone (their fd closed or reused)."""
        for fd, sub in list(self._subscribers.items()):
            if _peername(fd) != sub.peer:
                del self._subscribers[fd]

    def _review(self) -> None:
        """The guard reloaded (a revocation, a policy edit): shut down every subscriber
        connection holding a subscription the policy no longer allows."""
        self._reviewed = self.guard.generation
        for fd, sub in list(self._subscribers.items()):
            denied = [
                t for t in sub.topics if not self.allowed(sub.principal, SUBSCRIBE_OPERATION, t)
            ]
            if not denied:
                continue
            del self._subscribers[fd]
            if _shutdown(fd, sub.peer):
                self.proxy.evicted += 1
                log.warning(
                    "bus %s: disconnected subscriber '%s' at %s: it may no longer read '%s'",
                    self.proxy.name,
                    sub.principal,
                    sub.peer,
                    denied[0].decode("utf-8", "replace"),
                )

    def _forward(self) -> None:
        """Forward published messages whose principal may publish their topic."""
        xsub, xpub = self.xsub, self.xpub
        counts = self.proxy.counts
        n = 0
        while n < self.BURST and readable(xsub):
            frames, user, _ = recv_frames_from(xsub, NOBLOCK)
            n += 1
            size = sum(map(len, frames))
            counts["published"] += 1
            counts["published_bytes"] += size
            if self.allowed(user, PUBLISH_OPERATION, frames[0]):
                try:
                    send_frames(xpub, frames, NOBLOCK)
                    counts["delivered"] += 1
                    counts["delivered_bytes"] += size
                except zmq.Again:
                    pass  # XPUB drops at the high-water mark anyway
            else:
                self.proxy.denied_publish += 1
