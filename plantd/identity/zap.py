"""The ZAP handler of plantd's CURVE servers: a public key is accepted when it belongs to an
active principal, and its connections carry that principal's name as ``User-Id``.

The authenticator only decides at the handshake: a reload (after a revocation) affects NEW
connections. Per-message authorization (revocation on live connections) is the broker's job,
using the ``User-Id`` frame property this authenticator sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from plantd.security.curve import DOMAIN


class _PrincipalKeys:
    """The key -> principal table both authenticators share (pyzmq's credentials provider
    and user-id hooks)."""

    def _setup(
        self,
        load: Callable[[], Mapping[str, str]],
        domain: str,
        on_unknown: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self._names: Mapping[str, str] = dict(load())
        self.domain = domain
        #: called before refusing a key we do not know: a principal added a moment ago must
        #: not be refused for good (RFC 26: a refused client does not retry) just because the
        #: table was loaded before it; the hook refreshes and may call :meth:`reload`
        self._on_unknown = on_unknown

    def reload(self) -> None:
        """Re-read the key table: revoked keys are refused from the next handshake on."""
        self._names = dict(self._load())

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """pyzmq's credentials-provider hook: is this key allowed in ``domain``?"""
        key = z85_key.decode("ascii")
        if key not in self._names and self._on_unknown is not None:
            self._on_unknown()
        return domain == self.domain and key in self._names

    def curve_user_id(self, client_public_key: bytes) -> str:
        # "" if the key was dropped by a reload between callback and here: no principal
        return self._names.get(z85.encode(client_public_key).decode("ascii"), "")


class PrincipalAuthenticator(_PrincipalKeys, AsyncioAuthenticator):
    """ZAP handler: a client key is accepted when it belongs to an active principal, and its
    connection's ``User-Id`` is that principal's name. Runs in the event loop.

    ``load`` returns the current key -> name table (e.g. ``{k: p.name for k, p in
    Registry.active_keys().items()}``); :meth:`reload` calls it again.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        load: Callable[[], Mapping[str, str]],
        domain: str = DOMAIN,
        on_unknown: Callable[[], None] | None = None,
    ) -> None:
        AsyncioAuthenticator.__init__(self, context)
        self._setup(load, domain, on_unknown)
        self.configure_curve_callback(domain, credentials_provider=self)


class ThreadPrincipalAuthenticator(_PrincipalKeys, ThreadAuthenticator):
    """:class:`PrincipalAuthenticator` in a thread of its own, for servers that run without
    an event loop (a bus proxy started from synchronous code)."""

    def __init__(
        self,
        context: zmq.Context[Any],
        load: Callable[[], Mapping[str, str]],
        domain: str = DOMAIN,
    ) -> None:
        ThreadAuthenticator.__init__(self, context)
        self._setup(load, domain)
        self.configure_curve_callback(domain, credentials_provider=self)
