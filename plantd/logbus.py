"""Publish ``logging`` records on the ``log`` bus (see ``docs/logging.md``).

Every daemon and module keeps its log file and, through :class:`LogBusHandler`, also puts
each record on the bus so the logger service, ``plant log tail -f`` and the TUI see the whole
installation live. Topic ``<service>.<level>``; payload::

    {ts, level, service, host, pid, logger, msg, fields, seq}

``seq`` counts every record this handler was given (1, 2, ...), including the ones the
publisher had to drop, so any consumer can count what it missed from the gaps.

The handler never blocks the caller: ZeroMQ queues up to the high-water mark and the handler
drops (and counts) beyond it. Structured fields come from ``extra={"fields": {...}}``; a
record logged while a traced request is served gets ``trace_id`` and ``span_id`` (the
handler's span, see ``plantd.tracing``) among them, so Loki and the logger's store can find
the logs of one trace.

Two things PUB/SUB alone would lose, kept by :class:`LogPublisher`:

* records logged before the logger subscribed (start-up lines, the first records of every
  producer while the connection joins, everything while the logger restarts). The publisher
  is an XPUB, so it sees subscriptions arrive; the logger subscribes to
  :data:`~plantd.vocabulary.LOGGER_PRESENT_TOPIC` besides everything. Until that marker is
  seen, every record is also kept in a bounded backlog (``backlog``, 1,000 records); when
  the marker arrives the backlog is published again with ``"replay": true`` (the logger
  drops the ones it already has). Checked at every record and by :meth:`LogBusHandler.pump`,
  which the daemon lifecycle calls periodically, so a quiet producer replays too;
* the last records at exit: :meth:`LogBusHandler.close` (``logging.shutdown()``, at exit)
  waits up to ``linger`` seconds (1 s) in all, a quarter of it for the logger to show up if
  records wait for it, the rest for ZeroMQ to hand over what is queued (its own context).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

import zmq

from plantd.protocol import jsoncodec
from plantd.protocol.tracecontext import trace_ids
from plantd.tracing import current_traceparent
from plantd.transport import NOBLOCK, readable, send_frames
from plantd.vocabulary import LEVEL_NAMES, LOGGER_PRESENT_TOPIC, level_name, level_number

if TYPE_CHECKING:
    from plantd.security.settings import ClientSecurity

__all__ = [
    "LEVEL_NAMES",
    "LogBusHandler",
    "LogPublisher",
    "install_log_bus",
    "level_name",
    "level_number",
]

# the level table is the vocabulary's (re-exported: callers import these names from here)

_PRESENT = LOGGER_PRESENT_TOPIC.encode()


class LogPublisher:
    """Publishes log records on a bus frontend and keeps a backlog until the logger is there.

    An XPUB socket connected to the proxy's XSUB: it publishes exactly like a PUB (to the
    topics somebody subscribed) and also receives the subscriptions, which is how it learns
    that the logger arrived (or left). Its own ZeroMQ context, so closing can linger without
    waiting on anybody else's sockets. Not thread-safe: the handler's lock serializes it.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        hwm: int = 10000,
        backlog: int = 1000,
        security: ClientSecurity | None = None,
    ) -> None:
        from plantd.client.secure import resolve

        self.endpoint = endpoint
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        try:
            resolve(security).apply(self._sock)  # the process's CURVE keys, as Publisher
        except BaseException:
            self._sock.close(linger=0)
            self._ctx.term()
            raise
        self._sock.connect(endpoint)
        self.backlog: deque[tuple[str, Any]] = deque(maxlen=max(0, backlog))
        self.logger_present = False
        self.sent = 0
        self.dropped = 0
        self.replayed = 0
        #: records pushed out of the full backlog before the logger came (lost to it only)
        self.backlog_lost = 0

    def publish_nowait(self, topic: str, doc: Any) -> bool:
        """Publish now (False if ZeroMQ's queue was full) and keep it if the logger is away."""
        self.pump()
        if not self.logger_present and self.backlog.maxlen:
            if len(self.backlog) == self.backlog.maxlen:
                self.backlog_lost += 1
            self.backlog.append((topic, doc))
        return self._send(topic, doc)

    def _send(self, topic: str, doc: Any) -> bool:
        try:
            send_frames(self._sock, [topic.encode(), jsoncodec.dumps(doc, default=str)], NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def pump(self) -> None:
        """Take in subscription changes; replay the backlog when the logger subscribes."""
        while readable(self._sock):
            try:
                message = self._sock.recv(NOBLOCK)
            except zmq.Again:
                break
            if message[1:] != _PRESENT:
                continue
            self.logger_present = message[:1] == b"\x01"
        if self.logger_present and self.backlog:
            while self.backlog:
                topic, doc = self.backlog.popleft()
                if isinstance(doc, dict):
                    doc = {**doc, "replay": True}
                self._send(topic, doc)
                self.replayed += 1

    def close(self, linger: float = 1.0) -> None:
        """Wait (at most ``linger`` s in all; a quarter of it for a logger that is not there)
        for the logger if records wait for it and for ZeroMQ to hand over what is queued;
        then close. Idempotent."""
        if self._sock.closed:
            return
        start = time.monotonic()
        deadline = start + max(0.0, linger)
        # a quarter of it at most for a logger that has not shown up (none may run at all)
        wait_logger = start + max(0.0, linger) / 4
        self.pump()
        while self.backlog and not self.logger_present and time.monotonic() < wait_logger:
            self._sock.poll(20)
            self.pump()
        remaining = max(0.0, deadline - time.monotonic())
        self._sock.close(linger=int(remaining * 1000))
        self._ctx.term()


class LogBusHandler(logging.Handler):
    """A ``logging.Handler`` publishing each record on the log bus, never blocking.

    ``logging.Handler.handle`` holds ``self.lock`` around :meth:`emit`, so the sequence
    counter and the (not thread-safe) ZeroMQ socket are only touched by one thread at a time.
    """

    def __init__(
        self,
        service: str,
        endpoint: str,
        *,
        level: int = logging.NOTSET,
        hwm: int = 10000,
        publisher: Any = None,
        host: str | None = None,
        backlog: int = 1000,
        linger: float = 1.0,
    ) -> None:
        super().__init__(level)
        if publisher is None:
            publisher = LogPublisher(endpoint, hwm=hwm, backlog=backlog)
        self.linger = linger
        self.service = service
        self.endpoint = endpoint
        self.publisher = publisher
        self.host = host or socket.gethostname()
        self.pid = os.getpid()
        self.seq = 0
        self.dropped = 0
        self._local = threading.local()

    def record_doc(self, record: logging.LogRecord) -> dict[str, Any]:
        """The bus payload of ``record`` (without advancing ``seq``)."""
        fields = getattr(record, "fields", None)
        fields = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info and record.exc_info[0] is not None:
            fields.setdefault("exc", "".join(traceback.format_exception(*record.exc_info)).rstrip())
        elif record.exc_text:
            fields.setdefault("exc", record.exc_text)
        if record.stack_info:
            fields.setdefault("stack", record.stack_info)
        trace = current_traceparent()
        if trace is not None:  # logged while serving (or sending) a traced request
            ids = trace_ids(trace)
            fields.setdefault("trace_id", ids.trace_id)
            fields.setdefault("span_id", ids.span_id)
        try:
            msg = record.getMessage()
        except Exception as exc:  # a bad %-format must not lose the record
            msg = f"{record.msg!r} (bad args: {exc})"
        return {
            "ts": record.created,
            "level": level_name(record.levelno),
            "service": self.service,
            "host": self.host,
            "pid": self.pid,
            "logger": record.name,
            "msg": msg,
            "fields": fields,
            "seq": self.seq,
        }

    def emit(self, record: logging.LogRecord) -> None:
        # a record logged while publishing (zmq, json) must not recurse into us; a record
        # logged with extra={"bus": False} stays off the bus (the Loki forwarder's complaints)
        if getattr(self._local, "busy", False) or getattr(record, "bus", True) is False:
            return
        self._local.busy = True
        try:
            self.seq += 1  # counts dropped records too: the gap is how consumers see loss
            doc = self.record_doc(record)
            topic = f"{self.service}.{doc['level']}"
            if not self.publisher.publish_nowait(topic, doc):
                self.dropped += 1
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False

    def pump(self) -> None:
        """Replay the backlog if the logger has arrived (the lifecycle calls this
        periodically, so a producer that logs nothing more still delivers its start-up)."""
        pump = getattr(self.publisher, "pump", None)
        if pump is None:
            return
        self.acquire()
        try:
            pump()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            if isinstance(self.publisher, LogPublisher):
                self.publisher.close(self.linger)
            else:
                self.publisher.close()
        finally:
            self.release()
            super().close()


def install_log_bus(
    service: str, endpoint: str, *, logger: logging.Logger | None = None, **kwargs: Any
) -> LogBusHandler:
    """Attach a :class:`LogBusHandler` to ``logger`` (the root logger by default).

    Idempotent: an existing handler for the same service and endpoint is returned as is and
    one for another service or endpoint is replaced, so the lifecycle and a daemon may both
    call this without publishing every record twice.
    """
    target = logger or logging.getLogger()
    for handler in list(target.handlers):
        if isinstance(handler, LogBusHandler):
            if handler.service == service and handler.endpoint == endpoint:
                return handler
            target.removeHandler(handler)
            handler.close()
    handler = LogBusHandler(service, endpoint, **kwargs)
    target.addHandler(handler)
    return handler
