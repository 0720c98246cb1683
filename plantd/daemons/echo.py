"""Deprecated alias of :mod:`plantd.echo` (each service's daemon lives with its service).

Kept so old imports and installed ``plantd.modules`` entry points keep working."""

from plantd.echo import DAEMON, SERVICE, EchoModule, EchoSettings

__all__ = ["DAEMON", "SERVICE", "EchoModule", "EchoSettings"]
