"""How a process finds its security: on or off, its own key, the broker's public key.

``PLANTD_SECURITY=on|off`` (default on). With security on every socket uses CURVE:

- a **client** (CLI, console, scripts) uses its own key from ``--identity``, else
  ``PLANTD_CLIENT_IDENTITY``, else ``$PLANTD_HOME/identity/secrets/admin.key_secret``, and
  the broker's public key from ``PLANTD_CLIENT_BROKER_KEY`` (a file), else
  ``$PLANTD_HOME/identity/broker.key``;
- a **daemon** uses its own principal's secret ``secrets/<daemon>.key_secret`` (the broker:
  ``broker.key_secret``), installed as the process default by the daemon lifecycle, so every
  client, worker and publisher it opens authenticates as that daemon;
- a **server** (the broker's ROUTER and bus proxies) uses ``broker.key_secret``.

With security off (explicit) sockets use the NULL mechanism, and only loopback or ``ipc://``
endpoints may be bound (:func:`check_bind`).

Resolution is lazy: nothing is read until a socket is made, so ``plant identity init`` works
without a keyring and a process that never talks to the broker never needs one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.exitcodes import ExitCode
from plantd.security.errors import IdentityError, NotFound
from plantd.security.keys import (
    BROKER,
    KeyPair,
    Keyring,
    client_identity_path,
    load_secret,
    read_certificate,
)

SECURITY_ENV = "PLANTD_SECURITY"
BROKER_KEY_ENV = "PLANTD_CLIENT_BROKER_KEY"
_ON = {"1", "true", "yes", "on", ""}
_OFF = {"0", "false", "no", "off"}


class NoKeyring(NotFound):
    """Security is on but there is no keyring to take keys from."""

    code = "no_keyring"


class InsecureBind(IdentityError):
    """A non-loopback endpoint would be bound without security."""

    code = "insecure_bind"
    exit_code = ExitCode.USAGE


def security_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``PLANTD_SECURITY`` (on unless it says off)."""
    env = os.environ if env is None else env
    value = env.get(SECURITY_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise IdentityError(f"{SECURITY_ENV}={value!r}: expected on or off")


def keyring_of(env: Mapping[str, str] | None = None) -> Keyring:
    """The keyring of ``$PLANTD_HOME``."""
    from plantd.config import plantd_home

    return Keyring.at_home(plantd_home(env).root)


def _require_keyring(ring: Keyring) -> None:
    if not ring.root.is_dir():
        raise NoKeyring(f"no keyring at {ring.root}: run 'plant identity init' (plant up does it)")


def is_local_endpoint(endpoint: str) -> bool:
    """Loopback TCP, ``ipc://`` or ``inproc://``: reachable from this host only."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name


def check_bind(endpoint: str, secure: bool) -> None:
    """Refuse to bind ``endpoint`` without security unless it is local."""
    if not secure and not is_local_endpoint(endpoint):
        raise InsecureBind(
            f"refusing to bind {endpoint} without security ({SECURITY_ENV}=off):"
            " insecure mode is for loopback and ipc:// endpoints only"
        )


@dataclass(frozen=True)
class ClientSecurity:
    """The CURVE client side of a socket: ``keys`` (own pair) and the broker's public key;
    both None for the NULL mechanism (security off)."""

    keys: KeyPair | None = None
    server_public: str | None = None
    #: where the key came from (``--identity``, ``PLANTD_CLIENT_IDENTITY``, a daemon name...)
    source: str = f"{SECURITY_ENV}=off"

    @property
    def secure(self) -> bool:
        return self.keys is not None

    def apply(self, socket: Any) -> None:
        """Set the socket options (before connect); nothing for the NULL mechanism."""
        if self.keys is not None and self.server_public is not None:
            from plantd.security.curve import configure_curve_client

            configure_curve_client(socket, self.keys, self.server_public)


INSECURE = ClientSecurity()


@dataclass(frozen=True)
class ServerSecurity:
    """The CURVE server side (the broker's key pair and the keyring its ZAP handler reads);
    ``keys`` None for the NULL mechanism."""

    keys: KeyPair | None = None
    keyring: Keyring | None = None

    @property
    def secure(self) -> bool:
        return self.keys is not None

    def apply(self, socket: Any, endpoint: str) -> None:
        """Set the socket options before binding ``endpoint`` (refused if insecure and not
        local). Start the ZAP authenticator first: the socket fails closed without it."""
        check_bind(endpoint, self.secure)
        if self.keys is not None:
            from plantd.security.curve import configure_curve_server

            configure_curve_server(socket, self.keys)


def _broker_public(ring: Keyring, env: Mapping[str, str]) -> str:
    explicit = env.get(BROKER_KEY_ENV, "").strip()
    path = Path(explicit).expanduser() if explicit else ring.broker_public
    if not explicit:
        _require_keyring(ring)
    return read_certificate(path).public


def client_security(
    identity: str | None = None, env: Mapping[str, str] | None = None
) -> ClientSecurity:
    """A client's security: its key (``--identity``, ``PLANTD_CLIENT_IDENTITY``, default
    path) and the broker's public key. Raises NoKeyring / NotFound / InsecureKeyFile."""
    env = os.environ if env is None else env
    if not security_enabled(env):
        return INSECURE
    ring = keyring_of(env)
    path, source = client_identity_path(identity, ring.root.parent, dict(env))
    if source == "default":
        _require_keyring(ring)
    return ClientSecurity(load_secret(path), _broker_public(ring, env), f"{source}: {path}")


def daemon_security(name: str, env: Mapping[str, str] | None = None) -> ClientSecurity:
    """Daemon ``name``'s own key (the broker's for the broker) as a client of the broker."""
    env = os.environ if env is None else env
    if not security_enabled(env):
        return INSECURE
    ring = keyring_of(env)
    _require_keyring(ring)
    path = ring.broker_secret if name == BROKER else ring.secret_path(name)
    if not path.exists():
        raise NotFound(
            f"no key for {name} at {path}: run 'plant identity add {name} --kind daemon"
            f" --role service:SERVICE' (plant module start does it for modules)"
        )
    return ClientSecurity(load_secret(path), _broker_public(ring, env), f"daemon {name}")


def server_security(env: Mapping[str, str] | None = None) -> ServerSecurity:
    """The broker's server side: its key pair and keyring (NULL when security is off)."""
    env = os.environ if env is None else env
    if not security_enabled(env):
        return ServerSecurity()
    ring = keyring_of(env)
    _require_keyring(ring)
    return ServerSecurity(load_secret(ring.broker_secret), ring)


# ---------------------------------------------------------------- the process default
_identity: str | None = None
_installed: ClientSecurity | None = None


def use_identity(path: str | None) -> None:
    """The CLI's ``--identity``: the key every later default client uses."""
    global _identity, _installed
    _identity, _installed = path, None


def install(security: ClientSecurity | None) -> None:
    """Make ``security`` the process default (the daemon lifecycle installs its daemon's);
    None forgets it (resolved from the environment again on next use)."""
    global _installed
    _installed = security


def default_client() -> ClientSecurity:
    """The security every client, worker, publisher and subscriber uses unless given one."""
    global _installed
    if _installed is None:
        _installed = client_security(_identity)
    return _installed
