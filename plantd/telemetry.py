"""Request counts, errors and latency histograms: plain Python on the hot path, Prometheus
families only when scraped.

The broker and every worker observe each request they complete. An observation is a
``bisect`` into fixed buckets and three additions (well under a microsecond), with no lock
(one event loop) and no ``prometheus_client`` object per request; :func:`request_families`
turns the numbers into ``<prefix>_requests_total``, ``<prefix>_request_errors_total`` and
``<prefix>_request_duration_seconds`` (a histogram) at scrape time. Label values are bounded by
the caller: registered operations, services that ever had a worker; anything else is folded
into :data:`OTHER`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "LATENCY_BUCKETS",
    "OTHER",
    "FamilyCollector",
    "Latency",
    "RequestStats",
    "merged",
    "request_families",
    "worker_families",
]

#: histogram upper bounds in seconds: 0.5 ms (a local echo) to 10 s (a long query)
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: the label value that unknown operations or services are folded into
OTHER = "other"


class Latency:
    """Count, errors and a latency histogram of one operation or service."""

    __slots__ = ("buckets", "errors", "requests", "total_seconds")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.requests = 0
        self.errors = 0
        self.total_seconds = 0.0

    def observe(self, seconds: float, error: bool = False) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.requests += 1
        self.total_seconds += seconds
        if error:
            self.errors += 1

    def merge(self, other: Latency) -> None:
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n
        self.requests += other.requests
        self.errors += other.errors
        self.total_seconds += other.total_seconds


class RequestStats:
    """:class:`Latency` per key (an operation name), at most ``max_keys`` of them."""

    def __init__(self, max_keys: int = 200) -> None:
        self.max_keys = max_keys
        self.by_key: dict[str, Latency] = {}

    def observe(self, key: str, seconds: float, error: bool = False) -> None:
        stats = self.by_key.get(key)
        if stats is None:
            if len(self.by_key) >= self.max_keys:
                key = OTHER
            stats = self.by_key.setdefault(key, Latency())
        stats.observe(seconds, error)


class FamilyCollector:
    """prometheus_client's collector protocol over a function yielding metric families."""

    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self.collect = collect

    def describe(self) -> list[Any]:
        return []  # names are only known at scrape time: skip the registry's duplicate check


def merged(stats: Iterable[RequestStats]) -> dict[str, Latency]:
    """One :class:`Latency` per key over several workers of one daemon."""
    out: dict[str, Latency] = {}
    for one in stats:
        for key, latency in one.by_key.items():
            out.setdefault(key, Latency()).merge(latency)
    return out


def worker_families(stats: Iterable[RequestStats]) -> Iterator[Any]:
    """``plantd_worker_*{operation}`` of a daemon's workers (the module SDK and the state
    daemon export these, so every service has them)."""
    return request_families(
        "plantd_worker", "operation", merged(stats), "MDP requests this daemon's workers completed"
    )


def request_families(
    prefix: str,
    label: str,
    stats: Mapping[str, Latency],
    what: str,
    errors: Mapping[str, int] | None = None,
) -> Iterator[Any]:
    """Prometheus families of ``stats`` labelled ``label``: ``what`` says what is counted
    (``"MDP requests this worker completed"``). ``errors`` overrides the error counts."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily(f"{prefix}_requests", f"{what}", labels=[label])
    failed = CounterMetricFamily(
        f"{prefix}_request_errors",
        f"{what} that ended in an error reply",
        labels=[label],
    )
    latency = HistogramMetricFamily(
        f"{prefix}_request_duration_seconds",
        f"Time to complete {what[0].lower()}{what[1:]}",
        labels=[label],
        unit="seconds",
    )
    bounds = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    for key in sorted(stats):
        s = stats[key]
        requests.add_metric([key], s.requests)
        failed.add_metric([key], s.errors if errors is None else errors.get(key, 0))
        cumulative, running = [], 0
        for bound, n in zip(bounds, s.buckets, strict=True):
            running += n
            cumulative.append((bound, running))
        latency.add_metric([key], cumulative, s.total_seconds)
    yield requests
    yield failed
    yield latency
