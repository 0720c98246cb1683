"""Settings of the proxy daemon (``PLANTD_PROXY_*``) and the loopback rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from plantd.config import LOCAL_BROKER, ConfigError, DaemonSettings, Endpoints
from plantd.vocabulary import HEALTH_PORTS, PROXY_PORT, bus

__all__ = ["ProxySettings", "parse_listen"]


@dataclass
class ProxySettings(DaemonSettings):
    """``PLANTD_PROXY_*``: where to listen, which broker to reach, limits and access."""

    health_port: int = HEALTH_PORTS["proxy"]
    #: HOST:PORT of the HTTP API (loopback only until identity enforcement lands)
    listen: str = f"127.0.0.1:{PROXY_PORT}"
    #: the broker, and the state bus (subscriber side) for watches
    endpoint: Endpoints = LOCAL_BROKER
    state_bus_sub: str = bus("state").subscribe
    #: seconds a request waits for its reply (``?timeout=`` on calls overrides)
    timeout: float = 5.0
    #: largest request body accepted (413 above)
    max_body_bytes: int = 1024 * 1024
    #: requests per second per token (per client address when anonymous); 0 = no limit
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    #: require a bearer token even when no token was issued yet
    require_token: bool = False
    #: origins allowed by CORS ("*" = any); empty = CORS off
    cors_origins: list[str] = field(default_factory=list)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError naming the
    setting otherwise, or when the host is not a loopback address."""
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"PLANTD_PROXY_LISTEN={listen!r}: expected HOST:PORT")
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ConfigError(
            f"PLANTD_PROXY_LISTEN={listen!r}: the proxy binds loopback only until identity"
            " enforcement lands (use 127.0.0.1 or ::1)"
        )
    return host, int(port_text)
