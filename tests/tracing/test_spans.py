"""Spans of the in-process pieces (broker, worker, client in this event loop) on the SDK's
in-memory exporter; and tracing off: nothing of OpenTelemetry is imported, the context is
still passed on."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from plantd import tracing
from plantd.client import Client
from plantd.client.errors import UnknownService
from plantd.client.worker import Worker
from tests.support.modules import running_broker

pytest.importorskip("opentelemetry.sdk")


@pytest.fixture
def exporter() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from plantd.tracing.otel import Tracing

    memory = InMemorySpanExporter()
    before = tracing._tracing
    tracing.install(Tracing.with_processor("test", SimpleSpanProcessor(memory)))
    try:
        yield memory
    finally:
        tracing.install(None)
        tracing._tracing = before


@pytest.fixture
async def endpoint(exporter: Any) -> AsyncIterator[str]:
    async with running_broker() as endpoint:  # made after install(): its core traces
        yield endpoint


async def serve(worker: Worker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.connected.wait(), 10)
    return task


async def test_nested_call_spans_are_linked_in_one_trace(endpoint: str, exporter: Any) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    inner = Worker(endpoint, "t.inner", heartbeat_interval=0.2)
    outer = Worker(endpoint, "t.outer", heartbeat_interval=0.2)
    client = Client(endpoint, timeout=5)
    seen: list[bytes | None] = []

    @inner.operation("echo")
    async def echo(doc: Any) -> Any:
        seen.append(tracing.current_traceparent())
        return doc

    @inner.operation("boom")
    async def boom(doc: Any) -> Any:
        raise ValueError("boom")

    @outer.operation("relay")
    async def relay(doc: Any) -> Any:
        return await client.call("t.inner", "echo", doc)

    tasks = [await serve(inner), await serve(outer)]
    try:
        assert await client.call("t.outer", "relay", {"x": 1}) == {"x": 1}
        with pytest.raises(Exception, match="boom"):
            await client.call("t.inner", "boom", {})
    finally:
        await client.close()
        for w in (inner, outer):
            await w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    spans = exporter.get_finished_spans()
    relay_spans = [s for s in spans if s.name in ("t.outer/relay", "t.inner/echo")]
    assert len({s.context.trace_id for s in relay_spans}) == 1
    parent_of = {s.context.span_id: s.parent for s in relay_spans}
    chain = sorted(relay_spans, key=lambda s: s.start_time)
    kinds = [(s.name, s.kind) for s in chain]
    assert kinds == [
        ("t.outer/relay", SpanKind.CLIENT),
        ("t.outer/relay", SpanKind.SERVER),  # broker
        ("t.outer/relay", SpanKind.SERVER),  # worker
        ("t.inner/echo", SpanKind.CLIENT),
        ("t.inner/echo", SpanKind.SERVER),  # broker
        ("t.inner/echo", SpanKind.SERVER),  # worker
    ]
    assert chain[0].parent is None
    for parent, span in itertools.pairwise(chain):
        assert parent_of[span.context.span_id].span_id == parent.context.span_id
    # the handler saw its own span as the current trace
    (current,) = seen
    assert current is not None and current.decode()[36:52] == f"{chain[-1].context.span_id:016x}"

    boom_spans = [s for s in spans if s.name == "t.inner/boom" and s.kind == SpanKind.SERVER]
    (failed,) = [s for s in boom_spans if "plantd.outcome" not in (s.attributes or {})]
    assert failed.status.status_code is StatusCode.ERROR
    assert "ValueError: boom" in str(failed.status.description)


async def test_broker_span_of_a_request_nobody_serves(endpoint: str, exporter: Any) -> None:
    async with Client(endpoint, timeout=5) as client:
        with pytest.raises(UnknownService):
            await client.call("t.nobody", "op", {})
    (broker,) = [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("plantd.status")
    ]
    assert broker.attributes["plantd.outcome"] == "error"
    assert broker.attributes["plantd.status"] == 404
    assert "unknown service" in broker.status.description
    (client,) = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert client.parent is None and broker.parent.span_id == client.context.span_id
    assert client.status.status_code.name == "ERROR"
    assert "UnknownService" in client.status.description


def core_spans(exporter: Any) -> dict[str, Any]:
    """The broker spans by their outcome: {"<outcome> <status>": span}."""
    out = {}
    for span in exporter.get_finished_spans():
        attrs = span.attributes or {}
        out[f"{attrs.get('plantd.outcome')} {attrs.get('plantd.status')}"] = span
    return out


def test_every_way_a_request_ends_ends_its_broker_span(exporter: Any) -> None:
    """Refused, expired, lost with its worker, too large, answered: one span each, with the
    status the client was sent (BrokerCore driven without sockets)."""
    from plantd.broker.core import BrokerCore, BrokerSettings
    from plantd.security.caller import CALLER_MARKER

    core = BrokerCore(BrokerSettings(request_timeout=1.0, max_message_bytes=1000), started=0.0)
    core.tracing = tracing.current()
    w, c = b"\x00W", b"\x00C"

    def request(service: bytes, *body: bytes, now: float = 0.0) -> None:
        core.handle(c, [b"MDPC02", b"\x01", service, *body], now)

    core.authorize = lambda sender, msg, origin: (
        (403, "not authorized: test") if msg.service == b"forbidden" else None
    )
    request(b"forbidden", b"op")
    request(b"nobody", b"op")
    core.tick(1.5)  # expires: 404
    core.handle(w, [b"MDPW02", b"\x01", b"svc", CALLER_MARKER], 2.0)
    request(b"svc", b"op", now=2.0)
    core.handle(w, [b"MDPW02", b"\x04", c, b"", b"x" * 2000], 2.1)  # too large: 413
    request(b"svc", b"op", now=2.2)
    core.handle(w, [b"MDPW02", b"\x04", c, b"", b"ok"], 2.3)  # answered
    request(b"svc", b"op", now=2.4)
    core.handle(w, [b"MDPW02", b"\x06"], 2.5)  # worker disconnects mid-request: 504
    spans = core_spans(exporter)
    assert set(spans) == {"error 403", "error 404", "error 413", "reply None", "error 504"}
    assert spans["error 403"].status.description == "not authorized: test"
    assert spans["reply None"].attributes["plantd.worker"] == w.hex()
    assert spans["reply None"].name == "svc/op"
    # the worker got the broker span's context inside the caller prefix
    dispatched = [m for m in core.outbox if m[0] == w and m[2] == b"\x02"]
    assert all(b"traceparent" in m[6] for m in dispatched)
