"""The broker's routing state: services, workers, queues, heartbeats, expiry and MMI.

No I/O: :meth:`BrokerCore.handle` takes one message as the ROUTER received it and
:meth:`BrokerCore.tick` advances time; both append the messages to send to ``outbox``
(each a frame list whose first frame is the routing id). The asyncio server in
``plantd.broker.server`` is a thin loop around this, so everything here is unit-tested
and fuzzed without sockets.

Every message passes through :meth:`BrokerCore.handle`, where the optional ``authorize``
hook sees the sender, the decoded message and its ``origin`` (the authenticated principal the
socket layer read, see ``plantd.broker.access``) and may refuse it: a refused REQUEST gets an
error reply with the hook's status and reason (403 naming the rule, 429 when rate limited),
a refused worker command a DISCONNECT. Workers that declared the caller capability in READY
get every request prefixed with the caller (``plantd.security.caller``), always: a client
cannot forge it.

A request's trace prefix (``plantd.protocol.tracecontext``) is always stripped; its
traceparent, if well formed, reaches plantd workers inside the caller prefix. With a
``tracing`` hook (``plantd.tracing.otel.Tracing``; None, the default, costs a None check per
request) the broker also records a span per routed request and passes its own on.

Clients whose dialect has no error reply (MDP/0.1, majortomo, Go plantd) are never sent one:
what would be an error for an RFC 18 client is, for them, a request held for a worker or
dropped (counted and warned), so their own timeout and retry work as with the reference
brokers. See the per-dialect table in docs/protocol.md.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from plantd import __version__
from plantd.broker.alerts import Alerts
from plantd.broker.fairqueue import FairQueue
from plantd.protocol import mdp, mmi
from plantd.protocol.mdp import Dialect, Kind, MalformedMessage, PeerMessage
from plantd.protocol.tracecontext import TRACE_MARKER, split_trace
from plantd.security.caller import ANONYMOUS, CALLER_MARKER, encode_caller, with_traceparent
from plantd.telemetry import Latency
from plantd.vocabulary import BROKER_ENDPOINT

# status codes carried in error replies (see docs/protocol.md)
BAD_REQUEST = 400
FORBIDDEN = 403
RATE_LIMITED = 429
UNKNOWN_SERVICE = 404
TOO_LARGE = 413
NO_WORKER = 503
WORKER_LOST = 504

MMI_PREFIX = b"mmi."
#: a module global: ``Kind.REQUEST`` is an attribute lookup on the enum class (~60 ns)
_REQUEST = Kind.REQUEST

#: bytes a queued request costs beyond its frames (Python objects), for the byte bounds
REQUEST_OVERHEAD = 256
#: mmi.workers / mmi.services page size: default and maximum (shared paging contract)
PAGE_LIMIT = 1000


@dataclass(slots=True)
class BrokerSettings:
    """Tunables of the broker; times in seconds."""

    endpoint: str = BROKER_ENDPOINT
    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    #: how long a busy worker that never heartbeats while busy (foreign workers) may stay silent
    busy_timeout: float = 30.0
    #: how long a request may wait for a worker while its service makes no progress; an RFC 18
    #: client then gets 404/503. Below the Guide's 2.5 s and our clients' 5 s timeouts, so the
    #: error always reaches the request it answers
    request_timeout: float = 2.0
    #: the longest any request is held: while its service keeps completing requests, or for
    #: clients whose dialect has no error reply (they rely on their own timeout and retry)
    max_wait: float = 60.0
    #: bounds of one service's queue: all clients, one client (fair share), request count
    max_queue_bytes: int = 64 << 20
    max_client_queue_bytes: int = 32 << 20
    max_queue: int = 1_000_000
    #: messages held for one peer whose pipe is full, in bytes
    max_backlog_bytes: int = 64 << 20
    max_message_bytes: int = 1 << 20
    #: requests per second each principal may send (token bucket; 0: no limit) and the
    #: burst it may send at once (0: one second's worth)
    rate_limit: float = 0.0
    rate_burst: float = 0.0


@dataclass(slots=True)
class Counters:
    """Monotonic counters exported by ``mmi.broker`` and ``/metrics``."""

    requests: int = 0
    replies: int = 0
    partials: int = 0
    errors: int = 0
    malformed: int = 0
    oversized: int = 0
    disconnects_sent: int = 0
    workers_expired: int = 0
    requests_expired: int = 0
    #: messages refused by authorization (status 403 / DISCONNECT)
    denied: int = 0
    #: requests refused because their principal was over its rate (status 429)
    rate_limited: int = 0
    unroutable: int = 0
    mmi: int = 0
    #: requests refused (RFC 18: 503) or dropped because their service's queue was full
    queue_full: int = 0
    #: requests ended without any reply: the client's dialect has no error reply, or the
    #: request was held past the point where an error could still be on time
    requests_dropped: int = 0
    #: requests whose worker died, disconnected or expired while serving them
    lost_mid_request: int = 0
    #: worker replies over max_message_bytes (the client got 413, the worker was freed)
    oversized_replies: int = 0
    #: messages held because the peer's pipe was full (sent later)
    backlogged: int = 0
    #: client-bound messages that could finally not be delivered (peer gone or not reading)
    replies_dropped: int = 0
    #: worker-bound messages that could finally not be delivered
    worker_sends_dropped: int = 0


class Request:
    """A client request waiting for, or being served by, a worker."""

    __slots__ = (
        "arrival",
        "body",
        "caller",
        "client",
        "cost",
        "dialect",
        "discard",
        "service",
    )
    #: what a :class:`TracedRequest` sets (class attributes here: an untraced request, the
    #: usual one, stores nothing for them)
    trace: bytes | None = None
    span: Any = None

    def __init__(
        self,
        client: bytes,
        dialect: Dialect,
        service: bytes,
        body: list[bytes],
        arrival: float,
        cost: int = 0,
        caller: list[bytes] | None = None,
    ) -> None:
        self.client = client
        #: the caller prefix for workers that read it (anonymous when nobody authenticated)
        self.caller = _ANONYMOUS_PREFIX if caller is None else caller
        self.dialect = dialect
        self.service = service
        self.body = body
        self.arrival = arrival
        self.cost = cost
        #: the client already got its answer (an oversized reply's 413): the rest of the
        #: worker's reply parts are discarded, not treated as a protocol violation
        self.discard = False


class TracedRequest(Request):
    """A request with a trace context or a broker span (tracing on)."""

    __slots__ = ("span", "trace")

    def __init__(self, *args: Any, trace: bytes | None, span: Any) -> None:
        super().__init__(*args)
        #: the traceparent plantd workers get (the client's, or the broker span's)
        self.trace = trace
        #: the broker's span of this request (tracing on)
        self.span = span


class Worker:
    """A registered worker as the broker sees it."""

    __slots__ = (
        "busy",
        "busy_since",
        "caller",
        "connected_at",
        "dialect",
        "dispatched",
        "heartbeats_while_busy",
        "identity",
        "last_seen",
        "served",
        "service",
    )

    def __init__(self, identity: bytes, service: Service, dialect: Dialect, now: float) -> None:
        self.identity = identity
        self.service = service
        self.dialect = dialect
        self.last_seen = now
        self.connected_at = now
        self.busy: Request | None = None
        self.busy_since = 0.0
        #: the REQUEST message last queued for it: if ZeroMQ cannot route exactly that
        #: message, the request never left the broker and can go to another worker
        self.dispatched: list[bytes] | None = None
        #: set once we see a heartbeat during a request: such a worker is held to the
        #: heartbeat deadline even while busy; others get ``busy_timeout``
        self.heartbeats_while_busy = False
        self.served = 0
        #: it declared the caller capability in READY: requests reach it with the prefix
        self.caller = False


class Service:
    """A service name with its workers and its queue of waiting requests."""

    __slots__ = (
        "ever_ready",
        "failed",
        "idle",
        "last_progress",
        "latency",
        "name",
        "queue",
        "requests",
        "workers",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.workers: dict[bytes, Worker] = {}
        #: idle workers, oldest idle first (load balancing per RFC 18)
        self.idle: OrderedDict[bytes, Worker] = OrderedDict()
        self.queue: FairQueue[Request] = FairQueue()
        self.requests = 0
        self.failed = 0
        #: arrival to final reply of each request a worker completed (/metrics histogram)
        self.latency = Latency()
        self.ever_ready = False
        #: when a worker last completed a request: a queue that keeps moving is not expired
        self.last_progress = float("-inf")


#: ``authorize(sender, msg, origin)``: None or True lets the message pass; False or a
#: (status, reason) pair refuses it; a :class:`Delegated` lets a REQUEST pass as sent by its
#: ``origin`` with the first two body frames (the act-as prefix) removed. ``origin`` is
#: whatever the socket layer passed to :meth:`BrokerCore.handle`
#: (``plantd.broker.access.Origin``, with a ``caller`` prefix).
Authorizer = Callable[[bytes, PeerMessage, Any], Any]
_ANONYMOUS_PREFIX = encode_caller(ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Delegated:
    """An ``authorize`` verdict: the request was sent for another principal (``origin``), which
    it is now authorized as; its act-as prefix is dropped before routing."""

    origin: Any


class BadArgument(ValueError):
    """An MMI request argument the broker refuses; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid_argument: field '{field}' {message}")
        self.field = field


@dataclass
class BrokerCore:
    """Majordomo broker state machine. Feed it messages and time; send what is in ``outbox``."""

    settings: BrokerSettings = field(default_factory=BrokerSettings)
    started: float = field(default_factory=time.monotonic)
    authorize: Authorizer | None = None
    #: ``plantd.tracing.otel.Tracing`` when this broker records spans, else None
    tracing: Any = None

    def __post_init__(self) -> None:
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.outbox: list[list[bytes]] = []
        self.counters = Counters()
        self.alerts = Alerts()
        self.last_error = ""
        self._next_heartbeat = self.started + self.settings.heartbeat_interval
        self._silence_limit = self.settings.heartbeat_interval * self.settings.heartbeat_liveness
        #: an idle worker silent this long missed a heartbeat: likely a ghost left behind by
        #: a reconnect under a new routing id, so it gets no new requests (see _take_idle)
        self._suspect_after = self.settings.heartbeat_interval * 1.5
        #: a queue this small is within both its byte bounds whoever sends (fast admission)
        self._within_every_bound = min(
            self.settings.max_queue_bytes, self.settings.max_client_queue_bytes
        )

    # --- input ------------------------------------------------------------------------

    def handle(self, sender: bytes, frames: list[bytes], now: float, origin: Any = None) -> None:
        """Process one message from ``sender`` (the routing id the ROUTER reported);
        ``origin``: who sent it, as the socket layer authenticated it (for ``authorize`` and
        the caller prefix)."""
        try:
            msg = mdp.decode_peer_message(frames)
        except mdp.InvalidRequest as exc:
            self.counters.malformed += 1
            self.last_error = str(exc)
            self._error(sender, exc.dialect, exc.service, BAD_REQUEST, str(exc))
            return
        except MalformedMessage as exc:
            self.counters.malformed += 1
            self.last_error = str(exc)
            return
        size = sum(map(len, frames))
        if size > self.settings.max_message_bytes:
            self._on_oversized(sender, msg, size, now)
            return
        kind = msg.kind
        trace = None
        if kind is _REQUEST and msg.body and msg.body[0] == TRACE_MARKER:
            trace, body = split_trace(msg.body)
            msg = msg._replace(body=body)
        if self.authorize is not None:
            verdict = self.authorize(sender, msg, origin)
            if isinstance(verdict, Delegated):
                origin = verdict.origin
                msg = msg._replace(body=msg.body[2:])
            elif verdict is not None and verdict is not True:
                self._refuse(sender, msg, verdict, trace)
                return
        if kind is Kind.REQUEST:
            self._on_request(sender, msg, now, size, origin, trace)
        elif kind is Kind.REPLY:
            self._on_reply(sender, msg, now)
        elif kind is Kind.HEARTBEAT:
            worker = self.workers.get(sender)
            if worker is None:
                self._disconnect(sender, msg.dialect)  # HEARTBEAT before READY
            else:
                worker.last_seen = now
                if worker.busy is not None:
                    worker.heartbeats_while_busy = True
                elif worker.service.queue:
                    self._feed(worker.service, now)  # it may have been suspect until now
        elif kind is Kind.READY:
            self._on_ready(sender, msg, now)
        else:  # DISCONNECT
            worker = self.workers.get(sender)
            if worker is not None:
                self._remove_worker(worker, "worker disconnected while serving the request")

    def _refuse(
        self, sender: bytes, msg: PeerMessage, verdict: Any, trace: bytes | None = None
    ) -> None:
        status, reason = (FORBIDDEN, "not authorized") if verdict is False else verdict[:2]
        if status == RATE_LIMITED:
            self.counters.rate_limited += 1
        else:
            self.counters.denied += 1
        self.alerts.note("denied", reason)
        if msg.kind is Kind.REQUEST:
            if self.tracing is not None:
                span = self._start_span(msg, trace)[0]
                self.tracing.end(span, reason, {"plantd.outcome": "error", "plantd.status": status})
            self._error(sender, msg.dialect, msg.service, status, reason)
            return
        self._disconnect(sender, msg.dialect)
        worker = self.workers.get(sender)
        if worker is not None:  # a worker whose principal was revoked
            self._remove_worker(worker, reason)

    def _on_request(
        self,
        client: bytes,
        msg: PeerMessage,
        now: float,
        size: int,
        origin: Any = None,
        trace: bytes | None = None,
    ) -> None:
        name = msg.service
        self.counters.requests += 1
        if name.startswith(MMI_PREFIX):
            self._mmi(client, msg, now)
            return
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name)
        service.requests += 1
        if trace is None and self.tracing is None:
            request = Request(client, msg.dialect, name, msg.body, now, size + REQUEST_OVERHEAD)
        else:
            span = None
            if self.tracing is not None:
                span, trace = self._start_span(msg, trace)
            request = TracedRequest(
                client,
                msg.dialect,
                name,
                msg.body,
                now,
                size + REQUEST_OVERHEAD,
                trace=trace,
                span=span,
            )
        if origin is not None:
            request.caller = origin.caller
        queue = service.queue
        worker = self._take_idle(service, now) if not queue else None
        if worker is not None:
            self._dispatch(worker, request, now)
            return
        s = self.settings
        total = queue.bytes + request.cost
        # the common case first: the whole queue is within one client's share
        if (total <= self._within_every_bound and len(queue) < s.max_queue) or (
            total <= s.max_queue_bytes
            and len(queue) < s.max_queue
            and queue.lane_bytes(client) + request.cost <= s.max_client_queue_bytes
        ):
            queue.push(request)
        else:
            self._queue_full(service, request)

    def _queue_full(self, service: Service, request: Request) -> None:
        queue = service.queue
        self.counters.queue_full += 1
        service.failed += 1
        reason = (
            f"queue of service '{_text(service.name)}' is full ({len(queue)} requests, "
            f"{queue.bytes} bytes waiting; this client's share: "
            f"{queue.lane_bytes(request.client)} bytes)"
        )
        self.alerts.note("queue_full", reason)
        self._error(request.client, request.dialect, service.name, NO_WORKER, reason)
        if request.span is not None:
            self._end_span(request, NO_WORKER, reason)

    def _take_idle(self, service: Service, now: float) -> Worker | None:
        """The oldest idle worker that is not suspect, taken out of the idle set."""
        idle = service.idle
        if not idle:
            return None
        identity, worker = next(iter(idle.items()))
        if now - worker.last_seen <= self._suspect_after:  # the common case: O(1)
            del idle[identity]
            return worker
        for identity, worker in idle.items():
            if now - worker.last_seen <= self._suspect_after:
                del idle[identity]
                return worker
        return None

    def _feed(self, service: Service, now: float) -> None:
        """Hand queued requests to idle workers that are fit to take them."""
        while service.queue:
            worker = self._take_idle(service, now)
            if worker is None:
                return
            self._dispatch(worker, service.queue.pop(), now)

    def _dispatch(self, worker: Worker, request: Request, now: float) -> None:
        worker.busy = request
        worker.busy_since = now
        if not worker.caller:
            body = request.body
        elif request.trace is None:
            body = [*request.caller, *request.body]
        else:
            body = [*with_traceparent(request.caller, request.trace), *request.body]
        msg = mdp.encode_worker_request(worker.dialect, request.client, body)
        msg.insert(0, worker.identity)
        worker.dispatched = msg
        self.outbox.append(msg)

    def _serving(self, sender: bytes, msg: PeerMessage) -> Worker | None:
        """The worker ``sender`` if it is serving the request ``msg`` replies to; otherwise it
        is told to start over (a reply from an unknown worker, or for another request is
        never delivered) and ``None`` is returned."""
        worker = self.workers.get(sender)
        request = worker.busy if worker is not None else None
        if worker is not None and request is not None and request.client == msg.client:
            return worker
        self.last_error = "reply from unknown worker or for another request"
        self._disconnect(sender, msg.dialect)
        if worker is not None:
            self._remove_worker(worker, "worker sent a reply for another request")
        return None

    def _on_reply(self, sender: bytes, msg: PeerMessage, now: float) -> None:
        worker = self._serving(sender, msg)
        if worker is None:
            return
        worker.last_seen = now
        request = worker.busy
        assert request is not None
        if request.discard:  # the rest of a reply whose client already got a 413
            if msg.final:
                self._finish(worker, now)
            return
        out = mdp.encode_client_reply(request.dialect, request.service, msg.body, msg.final)
        if out is not None:
            out.insert(0, request.client)
            self.outbox.append(out)
        if not msg.final:
            self.counters.partials += 1
            return
        self.counters.replies += 1
        worker.service.latency.observe(now - request.arrival)
        if request.span is not None:
            self._end_span(request, None, None, worker)
        self._finish(worker, now)

    def _finish(self, worker: Worker, now: float) -> None:
        """The worker completed its request: give it the next one, or mark it idle."""
        worker.busy = None
        worker.served += 1
        service = worker.service
        service.last_progress = now
        if service.queue:
            self._dispatch(worker, service.queue.pop(), now)
        else:
            service.idle[worker.identity] = worker

    def _on_oversized(self, sender: bytes, msg: PeerMessage, size: int, now: float) -> None:
        """A message over ``max_message_bytes``: a request gets 413; a worker's reply gets
        its client a 413 and frees the worker (the rest of that reply is discarded)."""
        self.counters.oversized += 1
        limit = _size_text(self.settings.max_message_bytes)
        self.last_error = f"message of {size} bytes over limit"
        if msg.kind is Kind.REQUEST:
            reason = f"message of {size} bytes exceeds the broker limit of {limit}"
            self.alerts.note("oversized", f"request for '{_text(msg.service)}': {reason}")
            self._error(sender, msg.dialect, msg.service, TOO_LARGE, reason)
            return
        if msg.kind is not Kind.REPLY:
            self.alerts.note("oversized", f"worker command of {size} bytes dropped")
            return
        worker = self._serving(sender, msg)
        if worker is None:
            return
        worker.last_seen = now
        request = worker.busy
        assert request is not None
        self.counters.oversized_replies += 1
        reason = f"reply of {size} bytes from {_text(request.service)} exceeds the {limit} limit"
        self.alerts.note("oversized", reason)
        if not request.discard:
            request.discard = True
            worker.service.failed += 1
            self._error(request.client, request.dialect, request.service, TOO_LARGE, reason)
            if request.span is not None:
                self._end_span(request, TOO_LARGE, reason, worker)
        if msg.final:
            self._finish(worker, now)

    def _on_ready(self, sender: bytes, msg: PeerMessage, now: float) -> None:
        if sender in self.workers:
            self.last_error = "READY from a registered worker"
            self._disconnect(sender, msg.dialect)
            self._remove_worker(self.workers[sender], "worker re-registered while serving")
            return
        if msg.service.startswith(MMI_PREFIX):
            self.last_error = "worker tried to register an mmi. service"
            self._disconnect(sender, msg.dialect)
            return
        service = self.services.get(msg.service)
        if service is None:
            service = self.services[msg.service] = Service(msg.service)
        worker = Worker(sender, service, msg.dialect, now)
        worker.caller = CALLER_MARKER in msg.body
        self.workers[sender] = worker
        service.workers[sender] = worker
        service.ever_ready = True
        if service.queue:
            self._dispatch(worker, service.queue.pop(), now)
        else:
            service.idle[sender] = worker

    # --- time -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send due heartbeats, expire silent workers and requests that waited too long."""
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_interval
            for worker in self.workers.values():
                self.outbox.append([worker.identity, *mdp.encode_worker_heartbeat(worker.dialect)])
        silence = self._silence_limit
        busy_timeout = self.settings.busy_timeout
        expired = []
        for worker in self.workers.values():
            deadline = worker.last_seen + silence
            if worker.busy is not None and not worker.heartbeats_while_busy:
                deadline = max(deadline, worker.busy_since + busy_timeout)
            if now > deadline:
                expired.append(worker)
        for worker in expired:
            self.counters.workers_expired += 1
            self._disconnect(worker.identity, worker.dialect)
            self._remove_worker(
                worker, f"worker expired after {now - worker.last_seen:.1f}s without heartbeat"
            )
        for name, service in list(self.services.items()):
            queue = service.queue
            if queue and service.idle:
                self._feed(service, now)
            if queue:
                self._expire(service, now)
            if not service.workers and not service.queue and not service.ever_ready:
                del self.services[name]

    def _expire(self, service: Service, now: float) -> None:
        """End the queued requests that waited too long.

        An RFC 18 request expires once it waited ``request_timeout`` with its service making
        no progress (no request completed); it gets the error only if it saw no progress at
        all, i.e. it is exactly ``request_timeout`` old, within its client's timeout. One held
        longer because the queue kept moving is dropped without a reply when the queue
        stalls: an error that late could be taken for the answer to a later request.
        Requests of dialects without an error reply are held for ``max_wait``, then dropped.
        """
        timeout = self.settings.request_timeout
        oldest = now - self.settings.max_wait

        def due(request: Request) -> bool:
            if request.arrival <= oldest:
                return True
            return (
                mdp.has_error_reply(request.dialect)
                and max(request.arrival, service.last_progress) <= now - timeout
            )

        ended = service.queue.expire(due)
        if not ended:
            return
        self.counters.requests_expired += len(ended)
        service.failed += len(ended)
        status, reason = self._expiry_reason(service)
        for request in ended:
            if request.arrival > oldest and request.arrival >= service.last_progress:
                self._error(request.client, request.dialect, service.name, status, reason)
            else:
                self.counters.requests_dropped += 1  # held past its client's timeout
            if request.span is not None:
                self._end_span(request, status, reason)
        self.alerts.note("expired", f"{len(ended)} at once; {reason}")

    def _expiry_reason(self, service: Service) -> tuple[int, str]:
        name = _text(service.name)
        timeout = f"{self.settings.request_timeout:g}s"
        if not service.ever_ready:
            return UNKNOWN_SERVICE, f"unknown service '{name}'"
        total = len(service.workers)
        if total == 0:
            return NO_WORKER, f"no worker for service '{name}' within {timeout}"
        busy = total - len(service.idle)
        if busy == total:
            return NO_WORKER, f"all {total} workers of service '{name}' busy for {timeout}"
        return NO_WORKER, (
            f"no worker of service '{name}' took the request within {timeout} "
            f"({busy} of {total} busy, the others silent)"
        )

    def unroutable(self, msg: list[bytes], now: float) -> None:
        """ZeroMQ has no connection for ``msg``'s routing id: that peer is gone (killed, or
        re-attached under a new id after a reset). A worker is dropped at once instead of
        after missed heartbeats; a request whose dispatch failed never reached it and goes
        back to the head of its queue for another worker."""
        self.counters.unroutable += 1
        worker = self.workers.get(msg[0])
        if worker is None:
            # a client that left: nobody is waiting for this reply
            self.alerts.note("unroutable", f"peer {msg[0].hex()} is gone")
            return
        self.alerts.note("unroutable", f"worker {msg[0].hex()} is gone")
        request = worker.busy
        if request is not None and msg is worker.dispatched:
            worker.busy = None
            worker.service.queue.push_front(request)
        self._remove_worker(worker, "worker connection is gone")
        self._feed(worker.service, now)

    def undeliverable(self, msg: list[bytes], reason: str) -> None:
        """The server gave up on ``msg`` (its peer stopped reading, or its backlog is full)."""
        if msg[0] in self.workers:
            self.counters.worker_sends_dropped += 1
        else:
            self.counters.replies_dropped += 1
        self.alerts.note("dropped", f"to {msg[0].hex()}: {reason}")

    def next_deadline(self, now: float) -> float:
        """Seconds until :meth:`tick` next has work (the server sleeps this long at most)."""
        return max(0.0, min(self._next_heartbeat - now, self.settings.heartbeat_interval))

    # --- helpers ----------------------------------------------------------------------

    def _remove_worker(self, worker: Worker, reason: str) -> None:
        identity = worker.identity
        self.workers.pop(identity, None)
        service = worker.service
        service.workers.pop(identity, None)
        service.idle.pop(identity, None)
        request = worker.busy
        if request is not None:
            worker.busy = None
            if request.discard:
                return  # its client already has its answer
            service.failed += 1
            self.counters.lost_mid_request += 1
            self.alerts.note("worker_lost", f"service '{_text(service.name)}': {reason}")
            self._error(request.client, request.dialect, request.service, WORKER_LOST, reason)
            if request.span is not None:
                self._end_span(request, WORKER_LOST, reason, worker)

    def _start_span(self, msg: PeerMessage, trace: bytes | None) -> tuple[Any, bytes]:
        """The broker's span of request ``msg`` (tracing on), child of ``trace``."""
        return self.tracing.broker_span(msg.service, msg.body, trace)  # type: ignore[no-any-return]

    def _end_span(
        self, request: Request, status: int | None, reason: str | None, worker: Worker | None = None
    ) -> None:
        """End a request's span: ``status`` None is a delivered reply, else the error sent."""
        attrs: dict[str, Any] = {"plantd.outcome": "reply" if status is None else "error"}
        if status is not None:
            attrs["plantd.status"] = status
        if worker is not None:
            attrs["plantd.worker"] = worker.identity.hex()
        self.tracing.end(request.span, reason, attrs)
        request.span = None

    def _disconnect(self, identity: bytes, dialect: Dialect) -> None:
        self.counters.disconnects_sent += 1
        self.outbox.append([identity, *mdp.encode_worker_disconnect(dialect)])

    def _error(
        self, client: bytes, dialect: Dialect, service: bytes, status: int, reason: str
    ) -> None:
        """Answer with an error frame; a client whose dialect has none gets nothing (it
        would take the error for the service's reply) and the request is counted dropped."""
        if not mdp.has_error_reply(dialect):
            self.counters.requests_dropped += 1
            return
        self.counters.errors += 1
        self._reply(client, dialect, service, mdp.encode_error(status, reason))

    def _reply(self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes]) -> None:
        out = mdp.encode_client_reply(dialect, service, body, True)
        if out is not None:
            out.insert(0, client)
            self.outbox.append(out)

    # --- MMI (RFC 8 plus JSON extensions) ----------------------------------------------

    def _mmi(self, client: bytes, msg: PeerMessage, now: float) -> None:
        self.counters.mmi += 1
        name = msg.service
        body = msg.body
        if name == b"mmi.service":
            target = body[-1] if body else b""
            service = self.services.get(target)
            status = b"200" if service is not None and service.workers else b"404"
            reply = [*body[:-1], status]
        elif name == b"mmi.services" or name == b"mmi.workers":
            try:
                limit, after = page_arguments(body)
            except BadArgument as exc:
                self._error(client, msg.dialect, name, BAD_REQUEST, str(exc))
                return
            if name == b"mmi.services":
                reply = [self.services_page(limit, after)]
            else:
                reply = [self.workers_page(now, limit, after)]
        elif name == b"mmi.broker":
            reply = [_json(self.broker_info(now))]
        else:
            reply = [*body[:-1], b"501"] if body else [b"501"]
        self._reply(client, msg.dialect, name, reply)

    def service_info(self, s: Service) -> dict[str, object]:
        return mmi.encode_service(
            mmi.ServiceEntry(
                name=_text(s.name),
                workers=len(s.workers),
                idle=len(s.idle),
                busy=len(s.workers) - len(s.idle),
                queue=len(s.queue),
                requests=s.requests,
                failed=s.failed,
            )
        )

    def worker_info(self, w: Worker, now: float) -> dict[str, object]:
        return mmi.encode_worker(
            mmi.WorkerEntry(
                identity=w.identity.hex(),
                service=_text(w.service.name),
                state="busy" if w.busy is not None else "idle",
                last_heartbeat_s=round(now - w.last_seen, 3),
                connected_s=round(now - w.connected_at, 3),
                served=w.served,
                dialect=w.dialect.name.lower(),
            )
        )

    def services_page(self, limit: int = PAGE_LIMIT, after: str | None = None) -> bytes:
        """One page of ``mmi.services``: services by name, after the cursor ``after``."""
        entries = sorted(((_text(s.name), s) for s in self.services.values()), key=_first)
        return self._page("services", entries, limit, after, self.service_info)

    def workers_page(self, now: float, limit: int = PAGE_LIMIT, after: str | None = None) -> bytes:
        """One page of ``mmi.workers``: workers by identity (hex), after the cursor ``after``."""
        entries = sorted(((w.identity.hex(), w) for w in self.workers.values()), key=_first)
        return self._page("workers", entries, limit, after, lambda w: self.worker_info(w, now))

    def _page(
        self,
        key: str,
        entries: Sequence[tuple[str, object]],
        limit: int,
        after: str | None,
        info: Callable[..., dict[str, object]],
    ) -> bytes:
        """``{key: [...], "more": bool, "next": cursor}`` cut by ``limit`` and by bytes (a
        quarter of the message limit), the cursor being the last entry's sort key."""
        start = 0 if after is None else bisect.bisect_right(entries, after, key=_first)
        budget = self.settings.max_message_bytes // 4
        parts: list[bytes] = []
        used = 0
        last: str | None = None
        for sort_key, entry in entries[start : start + limit]:
            part = _json(info(entry))
            used += len(part) + 1
            if parts and used > budget:
                break
            parts.append(part)
            last = sort_key
        more = start + len(parts) < len(entries)
        tail = mmi.encode_page_tail(more, last)
        return b'{"%s":[%s],%s' % (key.encode(), b",".join(parts), _json(tail)[1:])

    def broker_info(self, now: float) -> dict[str, object]:
        return mmi.encode_broker(
            mmi.BrokerStatus(
                version=__version__,
                uptime_s=round(now - self.started, 3),
                services=len(self.services),
                workers=len(self.workers),
                queued=sum(len(s.queue) for s in self.services.values()),
                queued_bytes=sum(s.queue.bytes for s in self.services.values()),
                counters=asdict(self.counters),
                settings={k: v for k, v in asdict(self.settings).items() if k != "endpoint"},
                time=round(time.time(), 6),
            )
        )


def page_arguments(body: list[bytes]) -> tuple[int, str | None]:
    """``limit`` and ``after`` of a paged MMI request: no body (or an empty frame) is the
    first page of ``PAGE_LIMIT``; otherwise one JSON object frame. Raises
    :class:`BadArgument` naming the field."""
    if not body or body == [b""]:
        return PAGE_LIMIT, None
    if len(body) > 1:
        raise BadArgument("body", f"must be one JSON frame, got {len(body)} frames")
    try:
        doc = json.loads(body[0])
    except ValueError as exc:
        raise BadArgument("body", f"is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadArgument("body", 'must be a JSON object {"limit": N, "after": CURSOR}')
    limit = doc.get("limit", PAGE_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT:
        raise BadArgument("limit", f"must be an integer from 1 to {PAGE_LIMIT}, got {limit!r}")
    after = doc.get("after")
    if after is not None and not isinstance(after, str):
        raise BadArgument("after", f"must be a string (a page's 'next'), got {after!r}")
    return limit, after


def _first(entry: tuple[str, object]) -> str:
    return entry[0]


def _size_text(n: int) -> str:
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def _text(name: bytes) -> str:
    return name.decode("utf-8", "replace")


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
