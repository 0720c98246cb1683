"""W3C trace context on MDP requests: the trace prefix of a request body (no I/O).

A client that traces puts two frames in front of its request body: :data:`TRACE_MARKER` and
the W3C ``traceparent`` of its span (``00-<trace id>-<parent span id>-<flags>``, ASCII). A
plantd broker always strips them (a foreign worker never sees them) and passes the context on
to plantd workers only, inside the caller prefix it adds (``plantd.security.caller``), where a
client cannot forge or break it: only a value that :func:`parse_traceparent` accepts is passed
on, any other is dropped (the request is served, untraced). See docs/protocol.md.
"""

from __future__ import annotations

import re

__all__ = [
    "TRACE_MARKER",
    "TraceIds",
    "parse_traceparent",
    "split_trace",
    "trace_ids",
    "trace_prefix",
]

#: the first frame of a request body's trace prefix (the second: the traceparent)
TRACE_MARKER = b"\x00plantd.trace/1"

# version 00 exactly; a later version may append fields after a dash (W3C 3.2.4)
_TRACEPARENT = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.S
)
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes) -> bytes | None:
    """The canonical 55-byte ``traceparent`` in ``value``, or None when it is not one (W3C
    rules: lower-case hex, version ``ff`` and all-zero ids invalid, version 00 has no tail)."""
    if len(value) > 512:
        return None
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_id, span_id, _flags, tail = m.groups()
    if version == b"ff" or (version == b"00" and tail is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return value[:55] if version == b"00" else b"00" + value[2:55]


def trace_prefix(traceparent: bytes) -> list[bytes]:
    """The two frames a client puts in front of a request body."""
    return [TRACE_MARKER, traceparent]


def split_trace(body: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    """``(traceparent, rest)`` of a body starting with the trace prefix; the prefix is removed
    even when its value is invalid (then ``(None, rest)``). ``(None, body)`` without one."""
    if len(body) < 2 or body[0] != TRACE_MARKER:
        return None, body
    return parse_traceparent(body[1]), body[2:]


class TraceIds:
    """The parts of a valid traceparent, as hex strings."""

    __slots__ = ("sampled", "span_id", "trace_id")

    def __init__(self, trace_id: str, span_id: str, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled


def trace_ids(traceparent: bytes) -> TraceIds:
    """Trace id, span id and sampled flag of a traceparent :func:`parse_traceparent` accepted."""
    text = traceparent.decode("ascii")
    return TraceIds(text[3:35], text[36:52], bool(int(text[53:55], 16) & 1))
