"""Deprecated alias of :mod:`plantd.state.daemon` (each service's daemon lives with its service).

Kept so old imports and installed ``plantd.modules`` entry points keep working."""

from plantd.state.daemon import DAEMON, SERVICE, StateDaemon, StateSettings

__all__ = ["DAEMON", "SERVICE", "StateDaemon", "StateSettings"]
