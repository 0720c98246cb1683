"""The broker's settings (``PLANTD_BROKER_*``) and where its buses are: importable without the
broker, zmq or any daemon, so the CLI and the console learn the bus endpoints from here.

The broker binds each bus twice and names the ends after its sockets: ``<bus>_frontend`` is
the **publish side** (its XSUB socket, where publishers connect) and ``<bus>_backend`` the
**subscribe side** (its XPUB socket, where subscribers connect). Everything else names them
``<bus>_bus`` and ``<bus>_bus_sub`` (:mod:`plantd.vocabulary`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from plantd.config import DaemonSettings, env_var, load_settings
from plantd.vocabulary import BROKER_ENDPOINT, BUS_NAMES, HEALTH_PORTS, bus

__all__ = ["BrokerDaemonSettings", "bus_endpoint", "client_bus_env"]


@dataclass
class BrokerDaemonSettings(DaemonSettings):
    """Broker tunables (``PLANTD_BROKER_*``); the first block mirrors ``BrokerSettings``."""

    health_port: int = HEALTH_PORTS["broker"]
    endpoint: str = BROKER_ENDPOINT
    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    busy_timeout: float = 30.0
    #: queue expiry while the service makes no progress; below the Guide's 2.5 s and our
    #: clients' 5 s timeouts so an RFC 18 caller gets the broker's precise answer (unknown
    #: service / no worker / all busy) in time, never after it gave up
    request_timeout: float = 2.0
    #: the longest a request is held (a queue that keeps moving; dialects without errors)
    max_wait: float = 60.0
    max_queue_bytes: int = 64 << 20
    max_client_queue_bytes: int = 32 << 20
    max_queue: int = 1_000_000
    max_backlog_bytes: int = 64 << 20
    max_message_bytes: int = 1 << 20
    #: requests per second per principal (token bucket; 0: no limit), and the burst
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    #: run the bus proxies in this process (disable to run a bare broker)
    buses: bool = True
    state_frontend: str = bus("state").publish
    state_backend: str = bus("state").subscribe
    event_frontend: str = bus("event").publish
    event_backend: str = bus("event").subscribe
    metric_frontend: str = bus("metric").publish
    metric_backend: str = bus("metric").subscribe
    log_frontend: str = bus("log").publish
    log_backend: str = bus("log").subscribe

    def bus_endpoints(self, name: str) -> tuple[str, str]:
        """(publish side, subscribe side) of bus ``name`` as this broker binds them."""
        if name not in BUS_NAMES:
            raise ValueError(f"unknown bus {name!r} (known: {', '.join(BUS_NAMES)})")
        return getattr(self, f"{name}_frontend"), getattr(self, f"{name}_backend")


def client_bus_env(name: str) -> tuple[str, str]:
    """The client variables naming bus ``name``'s subscribe side: the current one
    (``PLANTD_CLIENT_<BUS>_BUS_SUB``) and the deprecated alias (``PLANTD_CLIENT_<BUS>_BUS``)."""
    return env_var("client", f"{name}_bus_sub"), env_var("client", f"{name}_bus")


def bus_endpoint(
    name: str, explicit: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Where a client subscribes to bus ``name``: the flag (``explicit``), then the
    environment (``PLANTD_CLIENT_<BUS>_BUS_SUB``, or its deprecated alias
    ``PLANTD_CLIENT_<BUS>_BUS``), then the broker's configuration (file, ``PLANTD_BROKER_*``,
    defaults). The one resolution the CLI and the console share; a broken broker
    configuration raises :class:`~plantd.config.ConfigError` naming the file or variable."""
    if explicit:
        return explicit
    env = os.environ if env is None else env
    for var in client_bus_env(name):
        value = env.get(var, "").strip()
        if value:
            return value
    return load_settings(BrokerDaemonSettings, "broker", env=env).bus_endpoints(name)[1]
