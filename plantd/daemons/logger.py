"""Deprecated alias of :mod:`plantd.logger.daemon` (each service's daemon lives with its service).

Kept so old imports and installed ``plantd.modules`` entry points keep working."""

from plantd.logger.daemon import DAEMON, LoggerModule, LoggerSettings

__all__ = ["DAEMON", "LoggerModule", "LoggerSettings"]
