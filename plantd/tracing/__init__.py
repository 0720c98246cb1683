"""Distributed tracing of MDP requests: off by default, OpenTelemetry when switched on.

Off (the default), this module is all a process loads: :func:`current` is a global read and
a None check, and :mod:`opentelemetry` is never imported. On (``PLANTD_TRACING=on``, or
``OTEL_TRACES_EXPORTER=otlp``/``console``; ``OTEL_SDK_DISABLED=true`` wins), the first use
sets up the SDK (:mod:`plantd.tracing.otel`): spans of clients (CLIENT), the broker and
workers (SERVER), exported over OTLP/HTTP as the standard ``OTEL_EXPORTER_OTLP_*`` variables
say. docs/logging.md has the settings, docs/protocol.md the wire form.

What a traced request's handler calls continues its trace: the worker runs the handler with
:func:`continuing` (a context variable, like ``plantd.security.caller.acting_for``) set to
its span's ``traceparent``, and every client request reads it (:func:`current_traceparent`).
A process that does not trace still passes the context it was given on to its own calls, so
an untraced hop does not cut a trace in two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plantd.tracing.otel import Tracing

__all__ = [
    "ENV",
    "continuing",
    "current",
    "current_traceparent",
    "install",
    "set_service_name",
    "shutdown",
    "tracing_enabled",
]

#: ``on``/``off``: trace this process (exported as the ``OTEL_EXPORTER_OTLP_*`` variables say)
ENV = "PLANTD_TRACING"
_EXPORTERS = ("otlp", "console")
_TRUE = ("1", "true", "yes", "on")

_UNSET: object = object()
_tracing: object = _UNSET
_service_name = "plantd"
_parent: ContextVar[bytes | None] = ContextVar("plantd_traceparent", default=None)


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment switches tracing on (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return env.get(ENV, "").strip().lower() in _TRUE or exporter in _EXPORTERS


def current() -> Tracing | None:
    """The process's tracing, or None when it is off (decided, and set up, on first use)."""
    tracing = _tracing
    if tracing is _UNSET:
        tracing = _resolve()
    return tracing  # type: ignore[return-value]


def _resolve() -> Tracing | None:
    global _tracing
    tracing: Tracing | None = None
    if tracing_enabled():
        try:
            from plantd.tracing.otel import Tracing

            tracing = Tracing.from_environment(_service_name)
        except ImportError as exc:  # the optional extra is not installed: run untraced
            logging.getLogger("plantd.tracing").warning(
                "tracing is on but OpenTelemetry is missing (%s): pip install 'plantd[tracing]';"
                " running untraced",
                exc,
            )
    _tracing = tracing
    return tracing


def install(tracing: Tracing | None) -> None:
    """Use ``tracing`` (None: off) instead of what the environment says (tests, embedders)."""
    global _tracing
    _tracing = tracing


def set_service_name(name: str) -> None:
    """The ``service.name`` this process's spans carry unless ``OTEL_SERVICE_NAME`` is set
    (daemons: ``plantd-<daemon>``; call before the first request)."""
    global _service_name
    _service_name = name


def shutdown() -> None:
    """Export what is buffered and stop (a no-op when tracing never started)."""
    tracing = _tracing
    if tracing is not _UNSET and tracing is not None:
        tracing.shutdown()  # type: ignore[attr-defined]


def current_traceparent() -> bytes | None:
    """The ``traceparent`` this task's requests continue (None: they start a trace, or go
    untraced)."""
    return _parent.get()


@contextmanager
def continuing(traceparent: bytes | None) -> Iterator[None]:
    """Make this task's requests children of ``traceparent`` inside the block."""
    token = _parent.set(traceparent)
    try:
        yield
    finally:
        _parent.reset(token)
