"""Who sent the request a worker is serving, in a form a client cannot forge.

The broker knows each client's principal from its CURVE connection (the ``User-Id`` its ZAP
handler set). Workers that can read it say so in READY (an extra frame, :data:`CALLER_MARKER`,
after the service name); the broker then puts two frames in front of every request body it
sends them: the marker and the caller as JSON. Because the broker *always* adds them for such
a worker, the first two body frames come from the broker: a client that sends the marker
itself only adds frames further back. Foreign workers never declare the capability and get
the body unchanged.

In the worker SDK the caller of the request being served is :func:`current_caller` (a
context variable set for the handler's task), so handler signatures stay as they are.

Acting for another principal (the HTTP proxy, for the principal its API token names): inside
:func:`acting_for`, the client puts :data:`ACT_AS_MARKER` and the principal's name in front of
each request body. The broker allows that only to principals granted ``@act-as`` (the proxy's
service role, admin), strips the two frames, authorizes the request as the named principal
and tells the worker who it was, ``via`` whom.

A traced request's W3C ``traceparent`` (``plantd.protocol.tracecontext``) travels in the same
JSON document, as ``"traceparent"``: the broker adds it (:func:`with_traceparent`) after
checking its form, so the one frame a client cannot touch carries it, and foreign workers,
which get no caller prefix, never see it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from plantd.protocol.tracecontext import parse_traceparent

#: the READY capability frame and the first frame of the caller prefix
CALLER_MARKER = b"\x00plantd.caller/1"
#: the first frame of a request sent on behalf of another principal (the second: its name)
ACT_AS_MARKER = b"\x00plantd.act-as/1"
#: a whole process acting for one principal (a ``plant web`` session, under the proxy's key)
ACT_AS_ENV = "PLANTD_CLIENT_ACT_AS"


class BadCaller(ValueError):
    """A caller prefix that does not parse (only a broker bug can send one)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated sender of a request.

    ``principal`` is None when nobody was authenticated (insecure mode, or a broker that does
    not know the capability); ``roles`` are the principal's roles as the broker knew them when
    it routed the request; ``peer`` is the client's network address as the broker saw it.
    """

    principal: str | None
    roles: tuple[str, ...] = ()
    peer: str | None = None
    #: the principal that sent the request on this one's behalf (the proxy), if any
    via: str | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "principal": self.principal,
            "roles": list(self.roles),
            "peer": self.peer,
        }
        if self.via is not None:
            doc["via"] = self.via
        return doc

    @property
    def label(self) -> str:
        """A name for logs and the audit trail: the principal, or ``anonymous``."""
        return self.principal or "anonymous"


ANONYMOUS = Caller(None)

_current: ContextVar[Caller] = ContextVar("plantd_caller", default=ANONYMOUS)
_acting_for: ContextVar[str | None] = ContextVar("plantd_acting_for", default=None)


def current_caller() -> Caller:
    """The caller of the request this task serves (:data:`ANONYMOUS` outside a request)."""
    return _current.get()


@contextmanager
def serving(caller: Caller) -> Iterator[Caller]:
    """Make ``caller`` the :func:`current_caller` inside the block."""
    token = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(token)


def acting_principal() -> str | None:
    """The principal this task's requests are sent for (:func:`acting_for`, else the
    process's ``PLANTD_CLIENT_ACT_AS``), if any."""
    return _acting_for.get() or os.environ.get(ACT_AS_ENV) or None


@contextmanager
def acting_for(principal: str | None) -> Iterator[None]:
    """Send this task's requests on behalf of ``principal`` (None: as ourselves)."""
    token = _acting_for.set(principal)
    try:
        yield
    finally:
        _acting_for.reset(token)


def encode_act_as(principal: str) -> list[bytes]:
    """The two frames a client puts in front of a request body to act for ``principal``."""
    return [ACT_AS_MARKER, principal.encode("utf-8")]


def split_act_as(body: list[bytes]) -> tuple[str | None, list[bytes]]:
    """``(principal, rest)`` of a request body sent on someone's behalf, else ``(None, body)``."""
    if len(body) < 2 or body[0] != ACT_AS_MARKER:
        return None, body
    return body[1].decode("utf-8", "replace"), body[2:]


def encode_caller(caller: Caller) -> list[bytes]:
    """The two frames the broker puts in front of a request body."""
    doc = json.dumps(caller.to_json(), separators=(",", ":"), ensure_ascii=False)
    return [CALLER_MARKER, doc.encode("utf-8")]


def with_traceparent(prefix: list[bytes], traceparent: bytes) -> list[bytes]:
    """The caller prefix ``prefix`` carrying ``traceparent`` too (a value
    ``plantd.protocol.tracecontext.parse_traceparent`` accepted: hex digits and dashes, so it
    is spliced into the JSON as it is)."""
    return [prefix[0], b'%s,"traceparent":"%s"}' % (prefix[1][:-1], traceparent)]


def split_caller(body: list[bytes]) -> tuple[Caller | None, list[bytes]]:
    """``(caller, rest)`` of a body that may start with the caller prefix; ``(None, body)``
    when it does not (a broker without the capability)."""
    caller, _, rest = split_served(body)
    return caller, rest


def split_served(body: list[bytes]) -> tuple[Caller | None, bytes | None, list[bytes]]:
    """``(caller, traceparent, rest)`` of a body that may start with the caller prefix;
    ``(None, None, body)`` when it does not. A traceparent that does not parse is None."""
    if len(body) < 2 or body[0] != CALLER_MARKER:
        return None, None, body
    known = _parsed.get(body[1])
    if known is not None:
        return known, None, body[2:]
    caller, traceparent = _parse_caller(body[1])
    if traceparent is None:  # a traced request's prefix is new every time: not kept
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()
        _parsed[body[1]] = caller
    return caller, traceparent, body[2:]


#: callers by their prefix frame: a connection sends the same bytes with every request, and
#: parsing them was a good part of a small request's cost (a Caller is immutable)
_parsed: dict[bytes, Caller] = {}
_PARSED_LIMIT = 4096


def _parse_caller(frame: bytes) -> tuple[Caller, bytes | None]:
    """The caller of a prefix frame and its traceparent (None when absent or malformed)."""
    try:
        doc = json.loads(frame)
        principal = doc["principal"]
        roles = tuple(str(r) for r in doc.get("roles") or ())
        peer = doc.get("peer")
        via = doc.get("via")
        traceparent = doc.get("traceparent")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadCaller(f"caller prefix does not parse: {exc}") from None
    if principal is not None and not isinstance(principal, str):
        raise BadCaller("caller prefix: principal is not a string")
    caller = Caller(
        principal,
        roles,
        peer if isinstance(peer, str) else None,
        via if isinstance(via, str) else None,
    )
    if isinstance(traceparent, str):
        return caller, parse_traceparent(traceparent.encode("ascii", "replace"))
    return caller, None
