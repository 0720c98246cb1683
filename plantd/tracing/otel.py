"""The OpenTelemetry side of :mod:`plantd.tracing`, imported only when tracing is on.

One :class:`Tracing` per process wraps a tracer provider and knows the three spans of an
MDP request: the client's (CLIENT, one per request), the broker's (SERVER: service,
operation, worker, outcome) and the worker's (SERVER, one per handler run, status ERROR when
it answered with an error). Spans are linked by the W3C ``traceparent`` the request carries
(``plantd.protocol.tracecontext``), not by OpenTelemetry's propagators: the MDP frames are
the carrier.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from plantd import __version__
from plantd.protocol.tracecontext import trace_ids
from plantd.tracing import continuing

__all__ = ["Tracing", "operation_name", "traceparent_of"]

#: the ``rpc.system`` attribute of every span (OpenTelemetry RPC conventions)
RPC_SYSTEM = "plantd.mdp"


def traceparent_of(span: Span) -> bytes:
    """The W3C ``traceparent`` naming ``span`` as the parent."""
    ctx = span.get_span_context()
    return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))


def operation_name(service: bytes, body: Sequence[bytes]) -> str:
    """The operation of a request body (its first frame; none for MMI), at most 64 chars."""
    if service.startswith(b"mmi.") or not body:
        return ""
    return body[0][:64].decode("utf-8", "replace")


def _parent_context(traceparent: bytes | None) -> Any:
    """The OpenTelemetry context whose span is the remote ``traceparent`` (None: the current
    context, so a caller's own spans are parents)."""
    if traceparent is None:
        return None
    ids = trace_ids(traceparent)
    remote = SpanContext(
        trace_id=int(ids.trace_id, 16),
        span_id=int(ids.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if ids.sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _exporter_from_environment() -> SpanExporter:
    """``OTEL_TRACES_EXPORTER``: ``console`` (to stderr: a CLI's stdout is its data), else
    OTLP/HTTP (endpoint, headers and timeout from the standard ``OTEL_EXPORTER_OTLP_*``
    variables, read by the exporter)."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class Tracing:
    """Starts and ends the spans of MDP requests on one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("plantd", __version__)

    @classmethod
    def from_environment(cls, service_name: str) -> Tracing:
        """A provider named ``service_name`` (``OTEL_SERVICE_NAME`` wins), batching to the
        exporter the environment names (``OTEL_BSP_*`` tune the batches)."""
        return cls.with_processor(service_name, BatchSpanProcessor(_exporter_from_environment()))

    @classmethod
    def with_processor(cls, service_name: str, processor: SpanProcessor) -> Tracing:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        self.provider.shutdown()

    def start(
        self,
        service: bytes,
        operation: str,
        kind: SpanKind,
        parent: bytes | None,
        attributes: dict[str, Any] | None = None,
    ) -> tuple[Span, bytes]:
        """A started span of ``operation`` on ``service`` and the traceparent naming it."""
        name = service.decode("utf-8", "replace")
        attrs: dict[str, Any] = {"rpc.system": RPC_SYSTEM, "rpc.service": name}
        if operation:
            attrs["rpc.method"] = operation
            name = f"{name}/{operation}"
        if attributes:
            attrs.update(attributes)
        span = self.tracer.start_span(
            name, context=_parent_context(parent), kind=kind, attributes=attrs
        )
        return span, traceparent_of(span)

    def client_span(
        self, service: bytes, body: Sequence[bytes], parent: bytes | None
    ) -> tuple[Span, bytes]:
        """The CLIENT span of one request (``parent``: the traceparent it continues)."""
        return self.start(service, operation_name(service, body), SpanKind.CLIENT, parent)

    def broker_span(
        self, service: bytes, body: Sequence[bytes], parent: bytes | None
    ) -> tuple[Span, bytes]:
        """The broker's SERVER span of one routed request."""
        return self.start(service, operation_name(service, body), SpanKind.SERVER, parent)

    @staticmethod
    def end(
        span: Span,
        error: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """End ``span``, with status ERROR and ``error`` as its description if given."""
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    @contextmanager
    def serving(
        self, service: str, operation: str, parent: bytes | None, principal: str | None
    ) -> Iterator[Span]:
        """The worker's SERVER span around one handler run: current (for OpenTelemetry and
        for the handler's own requests, :func:`plantd.tracing.continuing`) inside the block.
        The caller marks an error reply with :meth:`failed`."""
        attrs = {"enduser.id": principal} if principal else None
        span, traceparent = self.start(service.encode(), operation, SpanKind.SERVER, parent, attrs)
        with trace.use_span(span, end_on_exit=True), continuing(traceparent):
            yield span

    @staticmethod
    def failed(span: Span, error: str) -> None:
        span.set_status(Status(StatusCode.ERROR, error))
