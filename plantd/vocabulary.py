"""The shared vocabulary of a plantd installation, defined once: service names, buses and their
default endpoints, the broker endpoint, default health ports and the log levels.

Every layer (protocol, client, services, daemons, CLI, console) imports its names from here,
so this module imports nothing but the standard library and is cheap enough for ``plant --help``.

Bus ends are named from the point of view of the process that connects:

* the **publish side** of a bus is where publishers connect (the broker's XSUB frontend);
* the **subscribe side** is where subscribers connect (the broker's XPUB backend).

Settings name them ``<bus>_bus`` (publish side) and ``<bus>_bus_sub`` (subscribe side).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BROKER_ENDPOINT",
    "BUSES",
    "BUS_NAMES",
    "CLIENT_SCOPE",
    "ECHO_SERVICE",
    "HEALTH_PORTS",
    "IDENTITY_SERVICE",
    "LEVELS",
    "LEVEL_ALIASES",
    "LEVEL_NAMES",
    "LOGGER_PRESENT_TOPIC",
    "LOGGER_SERVICE",
    "METRIC_SERVICE",
    "METRIC_TOPIC_PREFIX",
    "MODULE_SERVICE_PREFIX",
    "PROXY_PORT",
    "SERVICE_PREFIX",
    "STATE_SERVICE",
    "WEB_PORT",
    "Bus",
    "bus",
    "level_name",
    "level_number",
    "level_rank",
]

# --------------------------------------------------------------------------- services

#: every plantd service name starts with this (``org.plantd.<Name>``)
SERVICE_PREFIX = "org.plantd."
#: service names of modules (``org.plantd.module.<Name>``)
MODULE_SERVICE_PREFIX = SERVICE_PREFIX + "module."

STATE_SERVICE = SERVICE_PREFIX + "State"
IDENTITY_SERVICE = SERVICE_PREFIX + "Identity"
LOGGER_SERVICE = SERVICE_PREFIX + "Logger"
METRIC_SERVICE = MODULE_SERVICE_PREFIX + "Metric"
ECHO_SERVICE = MODULE_SERVICE_PREFIX + "Echo"

#: topic prefix of metric samples on the ``metric`` bus (``org.plantd.Metric.<device>``)
METRIC_TOPIC_PREFIX = SERVICE_PREFIX + "Metric."
#: the log-bus topic the logger subscribes to (besides everything) so that producers see a
#: store-and-forward consumer arrive: no record starts with a NUL byte, so nothing matches it
LOGGER_PRESENT_TOPIC = "\x00plantd.logger"
#: the state scope clients use when none is given (``PLANTD_CLIENT_SCOPE``)
CLIENT_SCOPE = SERVICE_PREFIX + "Client"

# --------------------------------------------------------------------------- endpoints

#: the broker's Majordomo endpoint (contract with upstream plantd)
BROKER_ENDPOINT = "tcp://127.0.0.1:9797"


@dataclass(frozen=True, slots=True)
class Bus:
    """A named pub/sub bus and the default endpoints of its two ends."""

    name: str
    publish: str  # publishers connect here (the broker's XSUB frontend binds it)
    subscribe: str  # subscribers connect here (the broker's XPUB backend binds it)


#: the buses of a plantd installation and their default endpoints (contract with upstream)
BUSES = (
    Bus("state", "tcp://127.0.0.1:11000", "tcp://127.0.0.1:11001"),
    Bus("event", "tcp://127.0.0.1:12000", "tcp://127.0.0.1:12001"),
    Bus("metric", "tcp://127.0.0.1:13000", "tcp://127.0.0.1:13001"),
    Bus("log", "tcp://127.0.0.1:14000", "tcp://127.0.0.1:14001"),
)
BUS_NAMES = tuple(b.name for b in BUSES)
_BUS_BY_NAME = {b.name: b for b in BUSES}


def bus(name: str) -> Bus:
    """The bus called ``name``; ``ValueError`` naming the known buses otherwise."""
    try:
        return _BUS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown bus {name!r} (known: {', '.join(BUS_NAMES)})") from None


#: default health/metrics HTTP port of each daemon (0 = ephemeral)
HEALTH_PORTS = {
    "broker": 8081,
    "state": 8082,
    "logger": 8083,
    "echo": 8084,
    "metric": 8085,
    "proxy": 8086,
    "identity": 8087,
}
#: the HTTP/JSON proxy (``PLANTD_PROXY_LISTEN``) and the web console (``plant web --port``)
PROXY_PORT = 8090
WEB_PORT = 8091

# --------------------------------------------------------------------------- log levels

#: canonical lowercase level names, by ``logging`` number (the names on the log bus)
LEVEL_NAMES = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
#: the canonical names in severity order
LEVELS = tuple(LEVEL_NAMES.values())
#: other spellings accepted on input, mapped to the canonical name
LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical"}
_NUMBERS = {name: number for number, name in LEVEL_NAMES.items()}
_NUMBERS.update({alias: _NUMBERS[name] for alias, name in LEVEL_ALIASES.items()})
_NUMBERS.update(trace=5, notset=0)


def level_name(levelno: int) -> str:
    """The bus name of a level; custom levels round down to the nearest standard one."""
    name = LEVEL_NAMES.get(levelno)
    if name is not None:
        return name
    below = [n for n in LEVEL_NAMES if n <= levelno]
    return LEVEL_NAMES[max(below)] if below else "debug"


def level_number(level: str | int | None, default: int = 20) -> int:
    """``"warning"``/``"WARN"``/``30``/``"30"`` -> 30; unknown names give ``default``."""
    if level is None or isinstance(level, bool):
        return default
    if isinstance(level, int):
        return level
    text = str(level).strip().lower()
    if text.isdigit():
        return int(text)
    return _NUMBERS.get(text, default)


def level_rank(level: str) -> int:
    """Index of ``level`` (or an alias) in :data:`LEVELS`; unknown levels rank as info."""
    text = level.lower()
    text = LEVEL_ALIASES.get(text, text)
    try:
        return LEVELS.index(text)
    except ValueError:
        return 1
