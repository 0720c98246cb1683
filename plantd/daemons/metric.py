"""Deprecated alias of :mod:`plantd.metric.daemon` (each service's daemon lives with its service).

Kept so old imports and installed ``plantd.modules`` entry points keep working."""

from plantd.metric.daemon import DAEMON, MetricModule, MetricSettings

__all__ = ["DAEMON", "MetricModule", "MetricSettings"]
