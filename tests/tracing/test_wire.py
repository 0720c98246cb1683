"""The trace prefix on the wire: parsing, the broker's stripping and passing on (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.protocol.tracecontext import (
    TRACE_MARKER,
    parse_traceparent,
    split_trace,
    trace_ids,
    trace_prefix,
)
from plantd.security.caller import CALLER_MARKER, split_served

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
W1, W2, C1 = b"\x00W1", b"\x00W2", b"\x00C1"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        TP + b"-extra",  # version 00 has no tail
        TP[:-2] + b'1"',  # a quote: what a JSON injection would need
        b'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","principal":"admin',
    ],
)
def test_invalid_traceparents_are_refused(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_valid_traceparent_and_a_later_version() -> None:
    assert parse_traceparent(TP) == TP
    later = b"01" + TP[2:] + b"-what-comes-next"
    assert parse_traceparent(later) == b"00" + TP[2:]
    ids = trace_ids(TP)
    assert (ids.trace_id, ids.span_id, ids.sampled) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        True,
    )


def test_split_trace_strips_even_an_invalid_value() -> None:
    assert split_trace([*trace_prefix(TP), b"op"]) == (TP, [b"op"])
    assert split_trace([TRACE_MARKER, b"junk", b"op"]) == (None, [b"op"])
    assert split_trace([b"op", b"{}"]) == (None, [b"op", b"{}"])


def core_with_workers() -> BrokerCore:
    core = BrokerCore(BrokerSettings(), started=0.0)
    core.handle(W1, [b"MDPW02", b"\x01", b"svc", CALLER_MARKER], 0.0)  # a plantd worker
    core.handle(W2, [b"MDPW02", b"\x01", b"foreign"], 0.0)  # e.g. Go plantd, majortomo
    return core


def dispatched_body(core: BrokerCore) -> list[bytes]:
    (msg,) = core.outbox
    core.outbox.clear()
    assert msg[:3] == [msg[0], b"MDPW02", b"\x02"]
    return msg[5:]  # after identity, protocol, command, client, empty


def test_plantd_worker_gets_the_traceparent_inside_the_caller_prefix() -> None:
    core = core_with_workers()
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", *trace_prefix(TP), b"op", b"{}"], 0.1)
    body = dispatched_body(core)
    caller, trace, rest = split_served(body)
    assert caller is not None and caller.principal is None
    assert trace == TP
    assert rest == [b"op", b"{}"]
    assert json.loads(body[1])["traceparent"] == TP.decode()


def test_foreign_worker_gets_the_body_without_the_trace_prefix() -> None:
    core = core_with_workers()
    core.handle(C1, [b"MDPC02", b"\x01", b"foreign", *trace_prefix(TP), b"op", b"{}"], 0.1)
    assert dispatched_body(core) == [b"op", b"{}"]


def test_untraced_request_is_routed_as_before() -> None:
    core = core_with_workers()
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", b"op", b"{}"], 0.1)
    body = dispatched_body(core)
    assert split_served(body)[1:] == (None, [b"op", b"{}"])
    assert b"traceparent" not in body[1]


def test_a_client_cannot_forge_the_caller_through_the_traceparent() -> None:
    core = core_with_workers()
    forged = TP[:-1] + b'","principal":"admin'
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", TRACE_MARKER, forged, b"op", b"{}"], 0.1)
    body = dispatched_body(core)
    caller, trace, rest = split_served(body)
    assert caller is not None and caller.principal is None
    assert trace is None and rest == [b"op", b"{}"]


def test_a_second_trace_prefix_stays_in_the_body() -> None:
    """Only the first is the broker's to strip: a client sending two gets the second read as
    its operation (the worker answers unknown operation), never as the broker's trace."""
    core = core_with_workers()
    other = b"00-11111111111111111111111111111111-2222222222222222-01"
    frames = [*trace_prefix(TP), *trace_prefix(other), b"op"]
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", *frames], 0.1)
    _, trace, rest = split_served(dispatched_body(core))
    assert trace == TP
    assert rest == [*trace_prefix(other), b"op"]


def test_authorization_sees_the_request_without_its_trace_prefix() -> None:
    """The trace prefix comes first (before the act-as prefix): the broker strips it before
    the authorize hook reads the operation or the act-as frames."""
    seen: list[list[bytes]] = []

    def authorize(sender: bytes, msg: Any, origin: Any) -> None:
        seen.append(list(msg.body))

    core = core_with_workers()
    core.authorize = authorize
    act_as = [b"\x00plantd.act-as/1", b"alice"]
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", *trace_prefix(TP), *act_as, b"op"], 0.1)
    assert seen == [[*act_as, b"op"]]


def test_exchange_puts_the_trace_prefix_first() -> None:
    from plantd import tracing
    from plantd.client.exchange import Exchange

    with tracing.continuing(TP):
        ex = Exchange("svc", [b"op", b"{}"], timeout=1, retries=0, acting_for="alice")
        mmi = Exchange("mmi.service", [b"svc"], timeout=1, retries=0)
    assert ex.request[3:] == [*trace_prefix(TP), b"\x00plantd.act-as/1", b"alice", b"op", b"{}"]
    assert mmi.request[3:] == [b"svc"]
    plain = Exchange("svc", [b"op"], timeout=1, retries=0)
    assert plain.request[3:] == [b"op"]
