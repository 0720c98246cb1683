"""Count, errors and latency of the requests this process's clients send, per service.

Every :class:`~plantd.client.Client` and :class:`~plantd.client.SyncClient` request ends in
``Exchange.finished``, which calls :func:`observe`; daemons export the figures on
``/metrics`` (the lifecycle registers :func:`client_families`) as
``plantd_client_requests_total{service}``, ``plantd_client_request_errors_total{service}``
and the histogram ``plantd_client_request_duration_seconds{service}`` (first send to final
reply, retries and failovers included). An error is a request that got no reply (timeout,
broker gone) or a broker error (403, 404, 429, 503...); a service's own ``success: false``
answer is a reply here (the worker's ``plantd_worker_request_errors_total`` counts it).

Label values are bounded: a request the broker answered "unknown service" is counted under
:data:`~plantd.telemetry.OTHER` (a typo in a proxy URL is not a new series), and beyond
:data:`MAX_SERVICES` names everything new is ``other`` too. Observations are plain Python
(see :mod:`plantd.telemetry`), meant for one event loop per process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plantd.client.errors import UnknownService
from plantd.telemetry import OTHER, RequestStats, request_families

__all__ = ["MAX_SERVICES", "STATS", "client_families", "observe"]

#: distinct ``service`` label values before new ones are folded into ``other``
MAX_SERVICES = 100
#: this process's figures
STATS = RequestStats(max_keys=MAX_SERVICES)


def observe(service: bytes, seconds: float, error: BaseException | None) -> None:
    """One finished request to ``service`` that took ``seconds`` (``error``: how it failed)."""
    name = OTHER if isinstance(error, UnknownService) else service.decode("utf-8", "replace")
    STATS.observe(name, seconds, error is not None and not isinstance(error, GeneratorExit))


def client_families() -> Iterator[Any]:
    """The Prometheus families of :data:`STATS` (built when scraped)."""
    return request_families(
        "plantd_client", "service", STATS.by_key, "MDP requests this process's clients sent"
    )
