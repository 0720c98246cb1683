"""The metric module ``org.plantd.module.Metric``: samples on the ``metric`` bus.

* producer (:mod:`.sources`, :mod:`.producer`): host metrics via psutil and a signal
  generator publish ``{timestamp, device, channel, value, units, tags}`` on topic
  ``org.plantd.Metric.<device>``;
* consumer (:mod:`.store`): keeps the latest sample per channel in memory and recent samples
  in SQLite with retention;
* the module :mod:`plantd.metric.daemon`: runs both and serves ``list``, ``latest``,
  ``range``, ``health`` over MDP.
"""

from __future__ import annotations

from plantd.vocabulary import METRIC_SERVICE, METRIC_TOPIC_PREFIX

SERVICE = METRIC_SERVICE
TOPIC_PREFIX = METRIC_TOPIC_PREFIX

__all__ = ["SERVICE", "TOPIC_PREFIX", "topic_for"]


def topic_for(device: str) -> str:
    """The bus topic of a device's samples (subscribers filter on the prefix)."""
    return f"{TOPIC_PREFIX}{device}"
