"""Everything that makes the broker's sockets secure, in one place: the ZAP authenticator on
the broker's ZeroMQ context, the :class:`~plantd.identity.authority.Authority` every
decision reads, the per-message :class:`~plantd.broker.access.BrokerAccess` and the audit of
denials.

Fail closed: :meth:`BrokerGuard.start` runs the authenticator before any socket binds, and
every server socket sets a ZAP domain with ``ZAP_ENFORCE_DOMAIN`` (plantd.security.curve),
so a socket whose authenticator is not running refuses every client.

Revocation: :meth:`refresh` (once per drained batch) reloads the authority when the
registry or the policy changed; then the caches are dropped (the next message is decided
anew, also on open connections) and the authenticator reloads its key table (reconnects
with a revoked key are refused at the handshake).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from plantd.broker.access import BrokerAccess, Denial, Origin
from plantd.broker.denials import DenialAudit
from plantd.protocol.mdp import Kind, PeerMessage
from plantd.security.keys import BROKER
from plantd.security.settings import ServerSecurity

log = logging.getLogger("plantd.broker")


class BrokerGuard:
    """Authentication and authorization of one broker process (one ZeroMQ context)."""

    def __init__(
        self,
        security: ServerSecurity,
        context: zmq.Context[Any],
        *,
        rate_limit: float = 0.0,
        rate_burst: float = 0.0,
    ) -> None:
        from plantd.identity.authority import Authority

        if security.keys is None or security.keyring is None:
            raise ValueError("a broker guard needs the broker's keys and keyring")
        self.security = security
        self.context = context
        self.authority = Authority(security.keyring)
        self.access = BrokerAccess(
            self.authority,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            clock=time.monotonic,
            on_denial=self._denied,
        )
        self.audit = DenialAudit(security.keyring.audit)
        #: bumped on every reload: the bus proxies' decision caches follow it
        self.generation = 0
        self._authenticator: Any = None

    def keys(self) -> dict[str, str]:
        """Public key -> principal name for the ZAP handler: active principals and the
        broker's own key (its log publisher on its own buses)."""
        assert self.security.keys is not None
        return {**self.authority.active_keys(), self.security.keys.public: BROKER}

    def start(self) -> None:
        """Start the ZAP authenticator (call in the event loop, before any bind)."""
        if self._authenticator is not None:
            return
        import asyncio

        import zmq.asyncio

        from plantd.identity.zap import PrincipalAuthenticator, ThreadPrincipalAuthenticator

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # started from synchronous code: the ZAP handler gets a thread
            self._authenticator = ThreadPrincipalAuthenticator(self.context, self.keys)
        else:
            shadow = zmq.asyncio.Context.shadow(self.context.underlying)
            # in the loop: an unknown key first makes it look for new principals
            self._authenticator = PrincipalAuthenticator(shadow, self.keys, on_unknown=self.refresh)
        self._authenticator.start()
        self.audit.start()

    @property
    def running(self) -> bool:
        return self._authenticator is not None

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self.audit.stop()
        self.authority.close()

    def apply(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        """Make ``socket`` a CURVE server that this guard's authenticator decides for."""
        if not self.running:
            raise RuntimeError("start the authenticator before binding (fail closed)")
        self.security.apply(socket, endpoint)

    def refresh(self) -> None:
        """Pick up revocations and policy edits (cheap when nothing changed)."""
        try:
            changed = self.access.refresh()
        except Exception as exc:  # a registry being rewritten: keep the last good view
            log.warning("could not reload the identity registry: %s", exc)
            return
        if changed:
            # the key table first: the bus proxies disconnect on the generation, and the
            # subscriber they disconnect must find its revoked key refused on reconnect
            if self._authenticator is not None:
                self._authenticator.reload()
            self.generation += 1

    def origin(self, user_id: str, peer: str) -> Origin:
        return self.access.origin(user_id, peer)

    def _denied(self, origin: Origin | None, msg: PeerMessage, denial: Denial) -> None:
        body = msg.body
        if msg.kind is Kind.REQUEST and body:
            operation = body[0][:64].decode("utf-8", "replace")
        else:
            operation = "@ready" if msg.kind is Kind.READY else msg.kind.name.lower()
        self.audit.record(
            principal=origin.principal if origin is not None else "",
            peer=origin.peer if origin is not None else None,
            service=msg.service.decode("utf-8", "replace"),
            operation=operation,
            outcome=f"denied: {denial.rule}",
        )
