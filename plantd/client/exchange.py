"""The request loop of both clients, without I/O: attempts, deadlines, reply checks, paging.

:class:`plantd.client.Client` (asyncio) and :class:`plantd.client.SyncClient` (blocking) are
thin drivers of these objects: they own the sockets and the waiting, the objects decide what
is sent, what a received message means and whether to try again. One implementation of the
rules, two ways of waiting (and no event loop for the CLI's ``plant state get``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from plantd import tracing
from plantd.client import errors, metrics
from plantd.client.reply import check_reply, service_name
from plantd.protocol import mdp
from plantd.protocol.tracecontext import trace_prefix
from plantd.security.caller import encode_act_as

__all__ = ["MAX_PAGES", "Exchange", "MmiListing", "decode_mmi", "next_cursor", "page_body"]

#: longest chain of pages an MMI listing follows (a broker gives at most 1000 entries each)
MAX_PAGES = 100_000


class Exchange:
    """One request: ``request`` frames, then reply parts until the FINAL.

    ``timeout`` bounds the wait for each part; after a silent part the request is sent again
    (``retries`` times, or ``failovers`` times through another broker) only if nothing was
    received for it yet: a stream half read cannot be replayed. ``acting_for``: send it on
    behalf of that principal (the act-as prefix, ``plantd.security.caller``; not for MMI).

    A request continues the trace of :func:`plantd.tracing.current_traceparent` (the request
    a worker's handler serves): it carries the W3C traceparent in the trace prefix, in front
    of everything (``plantd.protocol.tracecontext``; not for MMI). With tracing on it is the
    traceparent of this request's CLIENT span, which :meth:`finished` ends.
    """

    def __init__(
        self,
        service: str | bytes,
        body: tuple[bytes, ...] | list[bytes],
        *,
        timeout: float,
        retries: int,
        failovers: int = 0,
        acting_for: str | None = None,
    ) -> None:
        self.service = service_name(service)
        frames = list(body)
        #: this request's span, and the tracing that made it (tracing on)
        self.span: Any = None
        self._tracer: Any = None
        #: when the request was made (the client metrics' latency), 0 for MMI (not counted)
        self.started = 0.0
        if not self.service.startswith(b"mmi."):
            self.started = time.perf_counter()
            trace = tracing.current_traceparent()
            tracer = tracing.current()
            if tracer is not None:
                self.span, trace = tracer.client_span(self.service, frames, trace)
                self._tracer = tracer
            if acting_for is not None:
                frames[:0] = encode_act_as(acting_for)
            if trace is not None:
                frames[:0] = trace_prefix(trace)
        self.request = mdp.encode_request(self.service, frames)
        self.timeout = timeout
        self._attempts_left = retries
        self._failovers_left = failovers
        self._deadline = 0.0
        self.received = False

    def finished(self, error: BaseException | None) -> None:
        """The request is over (``error``: how it failed): count it (``plantd.client.metrics``)
        and end its span, if it has one."""
        if self.started:
            metrics.observe(self.service, time.perf_counter() - self.started, error)
            self.started = 0.0
        span, self.span = self.span, None
        if span is not None:
            failed = None if error is None or isinstance(error, GeneratorExit) else error
            attrs = {"plantd.received": self.received}
            reason = None if failed is None else f"{type(failed).__name__}: {failed}"
            self._tracer.end(span, reason, attrs)

    def sent(self, now: float) -> None:
        """The request went out (again): the wait for its first part starts."""
        self._deadline = now + self.timeout

    def time_left(self, now: float) -> float:
        """Seconds to wait for the next part; ``<= 0``: it is late (call :meth:`timed_out`)."""
        return self._deadline - now

    def received_frames(self, frames: list[bytes], now: float) -> mdp.ClientReply | None:
        """A message arrived: the reply part for the caller, or ``None`` for a stray one
        (another service's late reply). Raises the broker's error as a client exception."""
        reply = check_reply(frames, self.service)
        if reply is not None:
            self.received = True
            self._deadline = now + self.timeout
        return reply

    def failover(self) -> bool:
        """The broker died or went silent: True to send again through the next broker
        (``failovers`` times per request, when nothing was received: a half-read stream
        cannot be replayed). Writes carry a ``request_id``, so a resent write whose first
        copy was applied is answered with its first outcome, not applied twice."""
        if self.received or self._failovers_left <= 0:
            return False
        self._failovers_left -= 1
        return True

    def timed_out(self) -> bool:
        """No part in time: True to send again on a fresh socket, False to give up."""
        if self.received or self._attempts_left <= 0:
            return False
        self._attempts_left -= 1
        return True


def page_body(after: str | None) -> tuple[bytes, ...]:
    """Request body of a paged MMI listing: nothing for the first page."""
    return () if after is None else (json.dumps({"after": after}).encode(),)


def next_cursor(doc: Any, after: str | None) -> str | None:
    """The cursor of the page after ``doc``, or ``None`` when ``doc`` was the last one (also
    for a broker that does not page, and for a cursor that would not move)."""
    if not isinstance(doc, dict) or not doc.get("more"):
        return None
    cursor = doc.get("next")
    return cursor if isinstance(cursor, str) and cursor != after else None


def decode_mmi(decoder: str, doc: Any) -> Any:
    """``plantd.protocol.mmi.<decoder>(doc)``, a malformed document reported as the client's
    ProtocolError. (Imported on use: ``plant state get`` never reads an MMI document.)"""
    from plantd.protocol import mmi

    try:
        return getattr(mmi, decoder)(doc)
    except mmi.MalformedDocument as exc:
        raise errors.ProtocolError(f"malformed MMI reply: {exc}") from None


_DECODERS = {"mmi.services": "decode_services", "mmi.workers": "decode_workers"}


class MmiListing:
    """Walk every page of ``mmi.services``/``mmi.workers``: ask :meth:`body`, hand each reply
    document to :meth:`add` until it returns False, then read ``entries``.

    ``typed``: entries are decoded (:class:`plantd.protocol.mmi.ServiceEntry` /
    ``WorkerEntry``), else kept as the JSON objects the broker sent.
    """

    def __init__(self, name: str, *, typed: bool = False) -> None:
        if name not in _DECODERS:
            raise errors.ProtocolError(f"{name} is not a paged MMI listing")
        self.name = name
        self.key = name.removeprefix("mmi.")
        self.typed = typed
        self.entries: list[Any] = []
        self.after: str | None = None
        self._pages = 0

    def body(self) -> tuple[bytes, ...]:
        return page_body(self.after)

    def add(self, doc: Any) -> bool:
        """Take one page; True while there is a next one to ask for."""
        self._pages += 1
        if self.typed:
            page = decode_mmi(_DECODERS[self.name], doc)
            self.entries.extend(page.entries)
            nxt = page.next if page.next != self.after else None
        else:
            self.entries.extend(doc.get(self.key, []) if isinstance(doc, dict) else [])
            nxt = next_cursor(doc, self.after)
        self.after = nxt
        return nxt is not None and self._pages < MAX_PAGES

    def document(self) -> dict[str, list[Any]]:
        """Every entry, as one unpaged reply would be: ``{"workers": [...]}``."""
        return {self.key: self.entries}
