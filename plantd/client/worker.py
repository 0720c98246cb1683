"""Async Majordomo worker (RFC 18) with handlers per operation.

Request body convention of plantd services: frame 1 = operation name, frame 2 = JSON
document. The worker keeps heartbeating while a handler runs (the handler is a separate
task), reconnects with backoff and sends READY again when the broker goes silent, and
sends DISCONNECT on shutdown; with several brokers it does all of that with each.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from plantd import tracing
from plantd.client.reply import DEFAULT_ENDPOINT, format_bytes
from plantd.config import parse_endpoints
from plantd.protocol import jsoncodec, mdp
from plantd.protocol.envelope import (
    BAD_REQUEST,
    INTERNAL,
    INVALID_JSON,
    REPLY_TOO_LARGE,
    UNKNOWN_OPERATION,
    error_doc,
)
from plantd.protocol.mdp import Kind
from plantd.security.caller import (
    ANONYMOUS,
    CALLER_MARKER,
    BadCaller,
    Caller,
    serving,
    split_served,
)
from plantd.security.settings import ClientSecurity
from plantd.telemetry import RequestStats
from plantd.transport import NOBLOCK, readable, recv_frames, send_frames

if TYPE_CHECKING:
    from plantd.tracing.otel import Tracing

log = logging.getLogger("plantd.worker")

#: the broker's default message limit (``max_message_bytes``): a reply part above it is refused
DEFAULT_MAX_REPLY_BYTES = 1 << 20

JsonHandler = Callable[[Any], Awaitable[Any] | AsyncIterator[Any]]
RawHandler = Callable[[list[bytes]], Awaitable[list[bytes]] | AsyncIterator[list[bytes]]]


class Operation:
    __slots__ = ("handler", "name", "raw")

    def __init__(self, handler: Callable[..., Any], raw: bool, name: str = "") -> None:
        self.handler = handler
        self.raw = raw
        self.name = name


def error_document(code: str, message: str) -> dict[str, Any]:
    """The reply every plantd service gives when it refuses a request (the envelope's)."""
    return error_doc(code, message)


def _json_frame(doc: Any) -> list[bytes]:
    return [jsoncodec.dumps(doc, default=str)]


class Worker:
    """Serve one service: register operations, then ``await run()``.

    ``endpoint`` may name several brokers (comma-separated, or a sequence): the worker
    registers with every one of them, one session each (READY with the caller marker,
    heartbeats, reconnects), serving the same operations. A broker that dies costs only its
    session; clients fail over to the others.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] = DEFAULT_ENDPOINT,
        service: str = "",
        *,
        heartbeat_interval: float = 2.5,
        liveness: int = 3,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        context: zmq.asyncio.Context | None = None,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        security: ClientSecurity | None = None,
    ) -> None:
        if not service:
            raise ValueError("a worker needs a service name")
        self.endpoints = parse_endpoints(endpoint, "endpoint")
        self.service = service
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        #: the broker's limit; a larger reply part is replaced by a ``reply_too_large`` error
        self.max_reply_bytes = max_reply_bytes
        #: replies refused as too large (read by tests and health checks)
        self.oversized = 0
        # plain (not zmq.asyncio) sockets: readiness comes from the event loop watching the fd
        self._ctx: zmq.Context[zmq.Socket[bytes]] = (
            zmq.Context.shadow(context.underlying) if context else zmq.Context.instance()
        )
        self._ops: dict[bytes, Operation] = {}
        self._stopping = False
        self.served = 0
        #: count, errors and latency per operation (exported by the module SDK's /metrics)
        self.stats = RequestStats()
        #: set while registered with at least one broker
        self.connected = asyncio.Event()
        #: None: the process default (plantd.security.settings), resolved on first session
        self.security = security
        #: one session per broker, in ``endpoints`` order
        self.links = [_Link(self, e) for e in self.endpoints]

    @property
    def endpoint(self) -> str:
        """The brokers, as the setting names them."""
        return ",".join(self.endpoints)

    @property
    def connections(self) -> int:
        """Times READY was sent, over every broker (1 per broker + reconnects)."""
        return sum(link.connections for link in self.links)

    def brokers_connected(self) -> list[str]:
        """The brokers this worker is registered with (each answered READY) and heard from
        within two heartbeats: what health checks report, ahead of the liveness limit that
        ends a session."""
        return [link.endpoint for link in self.links if link.answering()]

    def _link_changed(self) -> None:
        if any(link.up for link in self.links):
            self.connected.set()
        else:
            self.connected.clear()

    # --- registration -----------------------------------------------------------------

    def operation(self, name: str, *, raw: bool = False) -> Callable[[Callable[..., Any]], Any]:
        """Decorator registering ``name``. JSON handlers get the decoded document and return a
        JSON-able value; raw handlers get all body frames and return reply frames. An async
        generator handler streams: each item is sent as a PARTIAL, the last one as FINAL."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add_operation(name, fn, raw=raw)
            return fn

        return register

    def add_operation(self, name: str, handler: Callable[..., Any], *, raw: bool = False) -> None:
        self._ops[name.encode()] = Operation(handler, raw, name)

    @property
    def operations(self) -> list[str]:
        return sorted(op.decode() for op in self._ops)

    # --- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until :meth:`stop` (or cancellation); survive broker restarts."""
        tasks = [
            asyncio.create_task(link.run(), name=f"{self.service}@{link.endpoint}")
            for link in self.links
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in self.links:
                link.close(send_disconnect=True)

    def broker_answering(self) -> bool:
        """Registered with at least one broker that answers (see :meth:`brokers_connected`)."""
        return bool(self.brokers_connected())

    async def stop(self) -> None:
        """Leave every broker cleanly (DISCONNECT) and make :meth:`run` return."""
        self._stopping = True
        for link in self.links:
            link.close(send_disconnect=True)


def registration_health(workers: Sequence[Worker]) -> tuple[str, dict[str, Any]]:
    """The ``<daemon>:worker`` health check of workers serving one service: pass when
    registered with every broker, warn with some, fail with none (naming the missing ones)."""
    endpoints = workers[0].endpoints if workers else ()
    up = {e for w in workers for e in w.brokers_connected()}
    missing = [e for e in endpoints if e not in up]
    detail: dict[str, Any] = {
        "observedValue": len(up),
        "observedUnit": "brokers",
        "brokers": len(endpoints),
        "served": sum(w.served for w in workers),
    }
    if not missing:
        return "pass", detail
    detail["output"] = (
        f"registered with {len(up)} of {len(endpoints)} brokers; not with {', '.join(missing)}"
    )
    return ("warn" if up else "fail"), detail


class _Link:
    """The worker's session with one broker: READY, serve, heartbeat, reconnect."""

    def __init__(self, worker: Worker, endpoint: str) -> None:
        self.w = worker
        self.endpoint = endpoint
        self._sock: zmq.Socket[bytes] | None = None
        self._fd: int | None = None
        self._beat_handle: asyncio.TimerHandle | None = None
        self._lost = asyncio.Event()
        self._last_heard = 0.0
        self._loop: Any = None  # the running loop, set by each session
        self._handler_task: asyncio.Task[None] | None = None
        self._last_sent = 0.0
        self._busy_heartbeat_sent = False
        self._handshake: Any = None
        #: times READY was sent to this broker
        self.connections = 0
        self.up = False

    def answering(self) -> bool:
        """Registered (the broker answered READY) and heard from within two heartbeats."""
        silent = time.monotonic() - self._last_heard
        return self.up and silent <= 2 * self.w.heartbeat_interval

    async def run(self) -> None:
        w = self.w
        backoff = w.reconnect_min
        while not w._stopping:
            served_before = w.served
            await self._session()
            if w._stopping:
                break
            # reset the backoff after a session that did real work
            backoff = w.reconnect_min if w.served > served_before else backoff
            log.warning(
                "%s: broker %s lost, reconnecting in %.2fs", w.service, self.endpoint, backoff
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, w.reconnect_max)

    def close(self, *, send_disconnect: bool) -> None:
        sock, self._sock = self._sock, None
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        if self.up:
            self.up = False
            self.w._link_changed()
        self._lost.set()
        if self._handler_task is not None and not self._handler_task.done():
            self._handler_task.cancel()
        if sock is None:
            return
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._beat_handle is not None:
            self._beat_handle.cancel()
            self._beat_handle = None
        if send_disconnect:
            try:
                send_frames(sock, mdp.DISCONNECT, NOBLOCK)
            except zmq.ZMQError:
                pass
        sock.close(linger=100 if send_disconnect else 0)

    def _send(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        """Send without blocking. A full queue means the broker stopped reading: the message
        is dropped (the broker expires us and answers the client) rather than stalling."""
        self._last_sent = time.monotonic()
        try:
            send_frames(sock, frames, NOBLOCK)
        except zmq.Again:
            log.warning(
                "%s: send queue to broker %s full, message dropped", self.w.service, self.endpoint
            )
        # the socket's fd is edge-triggered: a send can consume the readable edge
        if readable(sock):
            self._loop.call_soon(self._drain, sock)

    async def _session(self) -> None:
        """One connection to the broker: READY, then serve until it goes silent or says bye.

        A plain socket whose fd the event loop watches, drained with the Cython receive
        path, and one timer for heartbeats: no zmq.asyncio future per message, which is most
        of a worker's CPU at thousands of requests per second.
        """
        from plantd.client.secure import resolve, secure_socket

        w = self.w
        self._loop = loop = asyncio.get_running_loop()
        w.security = resolve(w.security)
        sock = w._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self._handshake = secure_socket(sock, w.security, self.endpoint)
        self._sock = sock
        self._lost = lost = asyncio.Event()
        self._busy_heartbeat_sent = False
        self._last_heard = time.monotonic()
        # the extra frame declares that we read the caller prefix (plantd.security.caller)
        self._send(sock, [*mdp.encode_ready(w.service.encode()), CALLER_MARKER])
        self.connections += 1
        # `up` is set when the broker first answers (see _drain), not here: a READY sent
        # into a dead endpoint proves nothing (health must say so while it is down)
        self._fd = sock.fileno()  # zmq.FD, typed as the int it is
        loop.add_reader(self._fd, self._drain, sock)
        self._beat(sock)
        self._drain(sock)
        try:
            await lost.wait()
        finally:
            if self._sock is sock:
                self.close(send_disconnect=False)

    def _beat(self, sock: zmq.Socket[bytes]) -> None:
        """Heartbeat when due; end the session when the broker has been silent too long."""
        if self._sock is not sock:
            return
        if self._handshake is not None:
            self._check_handshake()
        now = time.monotonic()
        interval = self.w.heartbeat_interval
        silence_limit = interval * self.w.liveness
        if now - self._last_heard > silence_limit:
            silent = now - self._last_heard
            log.warning(
                "%s: no heartbeat from broker %s for %.1fs", self.w.service, self.endpoint, silent
            )
            self.close(send_disconnect=False)
            return
        if now - self._last_sent >= interval:
            self._send(sock, mdp.HEARTBEAT)
        due = min(self._last_sent + interval, self._last_heard + silence_limit + 0.001)
        delay = max(0.005, due - time.monotonic())
        self._beat_handle = self._loop.call_later(delay, self._beat, sock)

    def _check_handshake(self) -> None:
        """Log a refused CURVE handshake (libzmq only says so on the monitor)."""
        from plantd.client.errors import AuthenticationFailed

        try:
            if self._handshake.check():
                self._handshake = None
        except AuthenticationFailed as exc:
            self._handshake = None
            sec = self.w.security
            log.error("%s: %s (%s)", self.w.service, exc, sec and sec.source)

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        try:
            while self._sock is sock and readable(sock):
                frames = recv_frames(sock, NOBLOCK)
                self._last_heard = time.monotonic()
                if not self.up:  # the broker answered our READY
                    self.up = True
                    self.w._link_changed()
                self._on_message(sock, frames)
        except zmq.ZMQError as exc:
            if not self.w._stopping:
                log.warning("%s: socket error %s", self.w.service, exc)
            if self._sock is sock:
                self.close(send_disconnect=False)

    def _on_message(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        service = self.w.service
        try:
            cmd = mdp.decode_worker_command(frames)
        except mdp.MalformedMessage as exc:
            log.warning("%s: dropped malformed message from broker: %s", service, exc)
            return
        if cmd.kind is Kind.REQUEST:
            if self._handler_task is not None and not self._handler_task.done():
                log.warning("%s: broker sent a request while one is running", service)
            if not self._busy_heartbeat_sent:
                # tells the broker we heartbeat while busy, so it can hold us to the
                # heartbeat deadline instead of the long busy timeout (docs/protocol.md)
                self._busy_heartbeat_sent = True
                self._send(sock, mdp.HEARTBEAT)
            self._handler_task = asyncio.create_task(self._serve(sock, cmd.client, cmd.body))
        elif cmd.kind is Kind.DISCONNECT:
            log.warning(
                "%s: broker %s asked us to disconnect; registering again", service, self.endpoint
            )
            self.close(send_disconnect=False)  # ends the session; run() reconnects

    async def _serve(self, sock: zmq.Socket[bytes], client: bytes, body: list[bytes]) -> None:
        """Run the handler for ``body`` and send its reply (parts, for a streaming handler).

        Plain handlers take a direct path: an async generator around every request cost
        more than the JSON work of a typical operation.
        """
        try:
            caller, trace, body = split_served(body)
        except BadCaller as exc:
            log.warning("%s: %s", self.w.service, exc)
            self._reply(sock, client, _json_frame(error_document(BAD_REQUEST, str(exc))), True)
            return
        tracer = tracing.current()
        with serving(caller or ANONYMOUS):
            if tracer is not None:
                await self._serve_traced(tracer, sock, client, body, trace, caller)
            elif trace is not None:  # not tracing here, but the handler's calls continue it
                with tracing.continuing(trace):
                    await self._serve_body(sock, client, body)
            else:
                await self._serve_body(sock, client, body)

    async def _serve_traced(
        self,
        tracer: Tracing,
        sock: zmq.Socket[bytes],
        client: bytes,
        body: list[bytes],
        trace: bytes | None,
        caller: Caller | None,
    ) -> None:
        """:meth:`_serve_body` in the worker's SERVER span (ERROR when the reply is one)."""
        operation = body[0][:64].decode("utf-8", "replace") if body else ""
        principal = caller.principal if caller is not None else None
        with tracer.serving(self.w.service, operation, trace, principal) as span:
            error = await self._serve_body(sock, client, body)
            if error is not None:
                tracer.failed(span, error)

    async def _serve_body(
        self, sock: zmq.Socket[bytes], client: bytes, body: list[bytes]
    ) -> str | None:
        """Serve one request; the error code of an error reply, else None."""
        try:
            op, arg = self._parse(sock, client, body)
            if op is None:
                return "invalid request"
            encode = _raw if op.raw else _json_frame
            started = time.perf_counter()
            failed = False
            error: str | None = None
            try:
                result = op.handler(arg)
                if inspect.isasyncgen(result):
                    pending: Any = _NOTHING
                    try:
                        async for item in result:
                            if pending is not _NOTHING and not self._reply(
                                sock, client, encode(pending), False
                            ):
                                break  # refused as too large: the error ended the stream
                            pending = item
                        else:
                            if pending is _NOTHING:  # nothing yielded: an empty final reply
                                pending = [] if op.raw else None
                            self._reply(sock, client, encode(pending), True)
                    finally:
                        await result.aclose()
                else:
                    value = await result
                    failed = isinstance(value, dict) and value.get("success") is False
                    if failed:
                        error = str(value.get("code") or value.get("error") or "error reply")
                    self._reply(sock, client, encode(value), True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                log.exception("%s: handler for %r failed", self.w.service, body[0])
                error = f"{type(exc).__name__}: {exc}"
                doc = error_document(INTERNAL, error)
                self._reply(sock, client, _json_frame(doc), True)
            self.w.served += 1
            self.w.stats.observe(op.name, time.perf_counter() - started, failed)
            return error
        except zmq.ZMQError as exc:
            log.warning("%s: could not send reply: %s", self.w.service, exc)
            return f"could not send reply: {exc}"

    def _parse(
        self, sock: zmq.Socket[bytes], client: bytes, body: list[bytes]
    ) -> tuple[Operation | None, Any]:
        """The operation and its argument; answers the request itself when it is invalid."""
        if not body:
            doc = error_document(BAD_REQUEST, "empty request body")
            self._reply(sock, client, _json_frame(doc), True)
            return None, None
        op = self.w._ops.get(body[0])
        if op is None:
            name = body[0][:64].decode("utf-8", "replace")
            known = ", ".join(self.w.operations)
            doc = error_document(
                UNKNOWN_OPERATION,
                f"unknown operation '{name}' for {self.w.service} (known: {known})",
            )
            self._reply(sock, client, _json_frame(doc), True)
            return None, None
        if op.raw:
            return op, body
        try:
            return op, (jsoncodec.loads(body[1]) if len(body) > 1 and body[1] else {})
        except ValueError as exc:
            doc = error_document(INVALID_JSON, f"request is not JSON: {exc}")
            self._reply(sock, client, _json_frame(doc), True)
            return None, None

    def _reply(
        self, sock: zmq.Socket[bytes], client: bytes, frames: list[bytes], final: bool
    ) -> bool:
        """Send one reply part; False if it was over the limit and an error went instead.

        The size is measured as the broker measures it (the sum of the frame lengths of the
        message it receives): a larger message would be refused by the broker, or make
        libzmq drop this worker's connection, and leave the client waiting.
        """
        if self._sock is not sock:  # the connection it came on is gone: the reply is stale
            return False
        w = self.w
        msg = mdp.encode_worker_reply(client, frames, final)
        size = sum(map(len, msg))
        if size <= w.max_reply_bytes:
            self._send(sock, msg)
            return True
        w.oversized += 1
        text = (
            f"reply of {size:,} bytes ({format_bytes(size)}) from {w.service} exceeds"
            f" the {format_bytes(w.max_reply_bytes)} limit"
        )
        log.warning("%s: %s; sent an error instead", w.service, text)
        doc = error_doc(REPLY_TOO_LARGE, text)
        self._send(sock, mdp.encode_worker_reply(client, _json_frame(doc), True))
        return False


def _raw(frames: list[bytes]) -> list[bytes]:
    return frames


_NOTHING = object()
