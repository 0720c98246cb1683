"""The logger service ``org.plantd.Logger``: stores the ``log`` and ``event`` buses in SQLite,
answers ``query``/``stats``/``health`` over MDP and optionally forwards to Grafana Loki.

See ``docs/logging.md``. Submodules: :mod:`.store` (the log store, on the SQLite engine of
:mod:`plantd.storage.ingest` that the metric module shares), :mod:`.loki` (forwarding); the
daemon and its MDP operations are the module :mod:`plantd.logger.daemon`.
"""

from __future__ import annotations

from plantd.vocabulary import LOGGER_SERVICE

SERVICE = LOGGER_SERVICE

__all__ = ["SERVICE"]
