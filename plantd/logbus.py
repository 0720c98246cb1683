"""Publish ``logging`` records on the ``log`` bus (see ``docs/logging.md``).

Every daemon and module keeps its log file and, through :class:`LogBusHandler`, also puts
each record on the bus so the logger service, ``plant log tail -f`` and the TUI see the whole
installation live. Topic ``<service>.<level>``; payload::

    {ts, level, service, host, pid, logger, msg, fields, seq}

``seq`` counts every record this handler was given (1, 2, ...), including the ones the
publisher had to drop, so any consumer can count what it missed from the gaps.

The handler never blocks the caller: ZeroMQ queues up to the high-water mark and the handler
drops (and counts) beyond it. Structured fields come from ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from typing import Any

from plantd.vocabulary import LEVEL_NAMES, level_name, level_number

__all__ = ["LEVEL_NAMES", "LogBusHandler", "install_log_bus", "level_name", "level_number"]

# the level table is the vocabulary's (re-exported: callers import these names from here)


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
    ) -> None:
        super().__init__(level)
        if publisher is None:
            from plantd.client.bus import Publisher

            publisher = Publisher(endpoint, hwm=hwm)
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

    def close(self) -> None:
        try:
            self.publisher.close()
        finally:
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
