"""The broker's routing state: services, workers, queues, heartbeats, expiry and MMI.

No I/O: :meth:`BrokerCore.handle` takes one message as the ROUTER received it and
:meth:`BrokerCore.tick` advances time; both append the messages to send to ``outbox``
(each a frame list whose first frame is the routing id). The asyncio server in
``plantd.broker.server`` is a thin loop around this, so everything here is unit-tested
and fuzzed without sockets.

Every message passes through :meth:`BrokerCore.handle`, where the optional ``authorize``
hook sees the sender and the decoded message: the place a later CURVE/ZAP layer checks
per-service permissions.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from plantd import __version__
from plantd.protocol import mdp
from plantd.protocol.mdp import Dialect, Kind, MalformedMessage, PeerMessage

# status codes carried in error replies (see docs/protocol.md)
BAD_REQUEST = 400
FORBIDDEN = 403
UNKNOWN_SERVICE = 404
TOO_LARGE = 413
NO_WORKER = 503
WORKER_LOST = 504

MMI_PREFIX = b"mmi."


@dataclass(slots=True)
class BrokerSettings:
    """Tunables of the broker; times in seconds."""

    endpoint: str = "tcp://127.0.0.1:9797"
    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    #: how long a busy worker that never heartbeats while busy (foreign workers) may stay silent
    busy_timeout: float = 30.0
    #: how long a request may wait in a service queue for a worker
    request_timeout: float = 3.0
    max_queue: int = 1000
    max_message_bytes: int = 1 << 20


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
    denied: int = 0
    unroutable: int = 0
    mmi: int = 0


class Request:
    """A client request waiting for, or being served by, a worker."""

    __slots__ = ("body", "client", "deadline", "dialect", "service")

    def __init__(
        self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes], deadline: float
    ) -> None:
        self.client = client
        self.dialect = dialect
        self.service = service
        self.body = body
        self.deadline = deadline


class Worker:
    """A registered worker as the broker sees it."""

    __slots__ = (
        "busy",
        "busy_since",
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


class Service:
    """A service name with its workers and its queue of waiting requests."""

    __slots__ = ("ever_ready", "failed", "idle", "name", "queue", "requests", "workers")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.workers: dict[bytes, Worker] = {}
        #: idle workers, oldest idle first (load balancing per RFC 18)
        self.idle: OrderedDict[bytes, Worker] = OrderedDict()
        self.queue: deque[Request] = deque()
        self.requests = 0
        self.failed = 0
        self.ever_ready = False


Authorizer = Callable[[bytes, PeerMessage], bool]


@dataclass
class BrokerCore:
    """Majordomo broker state machine. Feed it messages and time; send what is in ``outbox``."""

    settings: BrokerSettings = field(default_factory=BrokerSettings)
    started: float = field(default_factory=time.monotonic)
    authorize: Authorizer | None = None

    def __post_init__(self) -> None:
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.outbox: list[list[bytes]] = []
        self.counters = Counters()
        self.last_error = ""
        self._next_heartbeat = self.started + self.settings.heartbeat_interval
        self._silence_limit = self.settings.heartbeat_interval * self.settings.heartbeat_liveness
        #: an idle worker silent this long missed a heartbeat: likely a ghost left behind by
        #: a reconnect under a new routing id, so it gets no new requests (see _take_idle)
        self._suspect_after = self.settings.heartbeat_interval * 1.5

    # --- input ------------------------------------------------------------------------

    def handle(self, sender: bytes, frames: list[bytes], now: float) -> None:
        """Process one message from ``sender`` (the routing id the ROUTER reported)."""
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
            self.counters.oversized += 1
            self.last_error = f"message of {size} bytes over limit"
            if msg.kind is Kind.REQUEST:
                self._error(
                    sender,
                    msg.dialect,
                    msg.service,
                    TOO_LARGE,
                    f"message of {size} bytes exceeds the broker limit of "
                    f"{self.settings.max_message_bytes} bytes",
                )
            return
        if self.authorize is not None and not self.authorize(sender, msg):
            self.counters.denied += 1
            if msg.kind is Kind.REQUEST:
                self._error(sender, msg.dialect, msg.service, FORBIDDEN, "not authorized")
            else:
                self._disconnect(sender, msg.dialect)
            return
        kind = msg.kind
        if kind is Kind.REQUEST:
            self._on_request(sender, msg, now)
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

    def _on_request(self, client: bytes, msg: PeerMessage, now: float) -> None:
        name = msg.service
        self.counters.requests += 1
        if name.startswith(MMI_PREFIX):
            self._mmi(client, msg, now)
            return
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name)
        service.requests += 1
        request = Request(
            client, msg.dialect, name, msg.body, now + self.settings.request_timeout
        )
        worker = self._take_idle(service, now) if not service.queue else None
        if worker is not None:
            self._dispatch(worker, request, now)
        elif len(service.queue) >= self.settings.max_queue:
            service.failed += 1
            self._error(
                client,
                msg.dialect,
                name,
                NO_WORKER,
                f"queue of service '{_text(name)}' is full "
                f"({self.settings.max_queue} requests waiting)",
            )
        else:
            service.queue.append(request)

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
            self._dispatch(worker, service.queue.popleft(), now)

    def _dispatch(self, worker: Worker, request: Request, now: float) -> None:
        worker.busy = request
        worker.busy_since = now
        msg = mdp.encode_worker_request(worker.dialect, request.client, request.body)
        msg.insert(0, worker.identity)
        worker.dispatched = msg
        self.outbox.append(msg)

    def _on_reply(self, sender: bytes, msg: PeerMessage, now: float) -> None:
        worker = self.workers.get(sender)
        request = worker.busy if worker is not None else None
        if worker is None or request is None or request.client != msg.client:
            # a reply from a worker we do not know (expired, never READY) or for a request
            # it is not serving: never deliver it, tell the worker to start over
            self.last_error = "reply from unknown worker or for another request"
            self._disconnect(sender, msg.dialect)
            if worker is not None:
                self._remove_worker(worker, "worker sent a reply for another request")
            return
        worker.last_seen = now
        out = mdp.encode_client_reply(request.dialect, request.service, msg.body, msg.final)
        if out is not None:
            out.insert(0, request.client)
            self.outbox.append(out)
        if not msg.final:
            self.counters.partials += 1
            return
        self.counters.replies += 1
        worker.busy = None
        worker.served += 1
        service = worker.service
        if service.queue:
            self._dispatch(worker, service.queue.popleft(), now)
        else:
            service.idle[sender] = worker

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
        self.workers[sender] = worker
        service.workers[sender] = worker
        service.ever_ready = True
        if service.queue:
            self._dispatch(worker, service.queue.popleft(), now)
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
            while queue and queue[0].deadline <= now:
                request = queue.popleft()
                self.counters.requests_expired += 1
                service.failed += 1
                if service.ever_ready:
                    status, reason = (
                        NO_WORKER,
                        f"no worker for service '{_text(name)}' within "
                        f"{self.settings.request_timeout:g}s",
                    )
                else:
                    status, reason = UNKNOWN_SERVICE, f"unknown service '{_text(name)}'"
                self._error(request.client, request.dialect, name, status, reason)
            if not service.workers and not service.queue and not service.ever_ready:
                del self.services[name]

    def unroutable(self, msg: list[bytes], now: float) -> None:
        """ZeroMQ has no connection for ``msg``'s routing id: that peer is gone (killed, or
        re-attached under a new id after a reset). A worker is dropped at once instead of
        after missed heartbeats; a request whose dispatch failed never reached it and goes
        back to the head of its queue for another worker."""
        self.counters.unroutable += 1
        worker = self.workers.get(msg[0])
        if worker is None:
            return  # a client that left: nobody is waiting for this reply
        request = worker.busy
        if request is not None and msg is worker.dispatched:
            worker.busy = None
            worker.service.queue.appendleft(request)
        self._remove_worker(worker, "worker connection is gone")
        self._feed(worker.service, now)

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
            service.failed += 1
            self._error(request.client, request.dialect, request.service, WORKER_LOST, reason)

    def _disconnect(self, identity: bytes, dialect: Dialect) -> None:
        self.counters.disconnects_sent += 1
        self.outbox.append([identity, *mdp.encode_worker_disconnect(dialect)])

    def _error(
        self, client: bytes, dialect: Dialect, service: bytes, status: int, reason: str
    ) -> None:
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
        elif name == b"mmi.services":
            reply = [_json({"services": self.services_info()})]
        elif name == b"mmi.workers":
            reply = [_json({"workers": self.workers_info(now)})]
        elif name == b"mmi.broker":
            reply = [_json(self.broker_info(now))]
        else:
            reply = [*body[:-1], b"501"] if body else [b"501"]
        self._reply(client, msg.dialect, name, reply)

    def services_info(self) -> list[dict[str, object]]:
        return [
            {
                "name": _text(s.name),
                "workers": len(s.workers),
                "idle": len(s.idle),
                "busy": len(s.workers) - len(s.idle),
                "queue": len(s.queue),
                "requests": s.requests,
                "failed": s.failed,
            }
            for s in sorted(self.services.values(), key=lambda s: s.name)
        ]

    def workers_info(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "identity": w.identity.hex(),
                "service": _text(w.service.name),
                "state": "busy" if w.busy is not None else "idle",
                "last_heartbeat_s": round(now - w.last_seen, 3),
                "connected_s": round(now - w.connected_at, 3),
                "served": w.served,
                "dialect": w.dialect.name.lower(),
            }
            for w in self.workers.values()
        ]

    def broker_info(self, now: float) -> dict[str, object]:
        return {
            "version": __version__,
            "uptime_s": round(now - self.started, 3),
            "services": len(self.services),
            "workers": len(self.workers),
            "queued": sum(len(s.queue) for s in self.services.values()),
            "counters": asdict(self.counters),
            "settings": {
                k: v for k, v in asdict(self.settings).items() if k != "endpoint"
            },
        }


def _text(name: bytes) -> str:
    return name.decode("utf-8", "replace")


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
