"""Deprecated alias of :mod:`plantd.broker.daemon` (each service's daemon lives with its service).

Kept so old imports and installed ``plantd.modules`` entry points keep working."""

from plantd.broker.daemon import BUS_NAMES, DAEMON, BrokerDaemon, BrokerDaemonSettings

__all__ = ["BUS_NAMES", "DAEMON", "BrokerDaemon", "BrokerDaemonSettings"]
