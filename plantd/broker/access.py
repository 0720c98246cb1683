"""Who may do what at the broker: per-message authorization and rate limiting.

The broker's socket layer reads each message's ``User-Id`` (the principal the ZAP handler
authenticated) and ``Peer-Address``, and hands :meth:`BrokerAccess.origin` of them to the
core with the message; the core's ``authorize`` hook is :meth:`BrokerAccess.authorize`:

- every message needs an **active** principal: a revoked or removed one is refused on its
  next message, also on a connection that is already open;
- a REQUEST is checked against ``(principal, roles, service, operation)``, the operation
  being the first body frame (MMI: any authenticated principal, by the built-in rule);
- a READY is checked against ``(service, "@ready")``: only ``service:<name>`` (or admin)
  registers as worker ``name``;
- a REQUEST sent on behalf of another principal (the act-as prefix, see
  ``plantd.security.caller``) needs ``@act-as`` on ``@broker`` (the proxy's service role,
  admin) and an active named principal; it is then decided as, and routed as, that principal
  (its workers see ``via``);
- each principal's requests pass a token bucket (``rate_limit`` per second, ``rate_burst``);
  over it the client gets status 429, never a silent drop.

Decisions are cached per (principal, service, operation) and the cache is dropped whenever
the :class:`~plantd.identity.authority.Authority` reloads (``refresh`` once per drained
batch), so a policy change or revocation takes effect on the next message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from plantd.broker.core import Delegated
from plantd.identity.authority import NOT_ACTIVE_RULE
from plantd.identity.policy import ACT_AS_OPERATION, BROKER_PSEUDO_SERVICE
from plantd.protocol.mdp import Kind, PeerMessage
from plantd.security.caller import ACT_AS_MARKER, Caller, encode_caller
from plantd.security.keys import BROKER

if TYPE_CHECKING:
    from plantd.identity.authority import Authority

# status codes of denials (docs/protocol.md)
FORBIDDEN = 403
RATE_LIMITED = 429
#: the broker's own connections (its log publisher on its own buses) act as admin
BROKER_ROLES = ("admin",)
_BROKER = BROKER_PSEUDO_SERVICE.encode()
_ACT_AS = ACT_AS_OPERATION.encode()
#: entries in each cache before it is dropped (bounds memory against made-up operations)
CACHE_LIMIT = 65536


class Origin(NamedTuple):
    """The authenticated sender of one message, and the caller prefix our workers get."""

    principal: str
    roles: tuple[str, ...]
    peer: str
    caller: list[bytes]


class Denial(NamedTuple):
    """A refused message: the error status and the one-line reason (naming the rule)."""

    status: int
    reason: str
    rule: str


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one per request."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


DenialHook = Callable[[Origin | None, PeerMessage, Denial], None]


class BrokerAccess:
    """The broker's ``authorize`` hook over an :class:`Authority`."""

    def __init__(
        self,
        authority: Authority,
        *,
        rate_limit: float = 0.0,
        rate_burst: float = 0.0,
        clock: Callable[[], float],
        on_denial: DenialHook | None = None,
    ) -> None:
        self.authority = authority
        self.rate_limit = rate_limit
        self.rate_burst = max(1.0, rate_burst or rate_limit)
        self._clock = clock
        self._on_denial = on_denial
        self._origins: dict[tuple[str, str], Origin] = {}
        self._decisions: dict[tuple[str, bytes, bytes], Denial | None] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def refresh(self) -> bool:
        """Reload the authority if its files changed (cheap); True when it did, and then
        every cached origin and decision is dropped."""
        if not self.authority.refresh():
            return False
        self._origins.clear()
        self._decisions.clear()
        return True

    def origin(self, user_id: str, peer: str) -> Origin:
        """The origin of a message from ``user_id`` at ``peer`` (cached)."""
        key = (user_id, peer)
        found = self._origins.get(key)
        if found is None:
            if len(self._origins) >= CACHE_LIMIT:
                self._origins.clear()
            roles = BROKER_ROLES if user_id == BROKER else self.authority.roles(user_id)
            caller = encode_caller(Caller(user_id or None, roles, peer or None))
            found = self._origins[key] = Origin(user_id, roles, peer, caller)
        return found

    def authorize(
        self, sender: bytes, msg: PeerMessage, origin: Origin | None
    ) -> Denial | Delegated | None:
        """None when ``msg`` may pass, :class:`Delegated` when it passes as sent for another
        principal, else the denial (also reported to ``on_denial``)."""
        verdict = self._check(msg, origin)
        if isinstance(verdict, Denial) and self._on_denial is not None:
            self._on_denial(origin, msg, verdict)
        return verdict

    def _check(self, msg: PeerMessage, origin: Origin | None) -> Denial | Delegated | None:
        if origin is None or not origin.principal:
            return Denial(FORBIDDEN, "not authorized: no authenticated principal", "no-principal")
        name = origin.principal
        if name == BROKER:
            return None
        kind = msg.kind
        if kind is Kind.REQUEST:
            if self.rate_limit > 0 and not self._within_rate(name):
                return Denial(
                    RATE_LIMITED,
                    f"rate limited: principal '{name}' is over {self.rate_limit:g} requests/s"
                    f" (burst {self.rate_burst:g}); slow down and retry",
                    "rate-limit",
                )
            body = msg.body
            if body and body[0] == ACT_AS_MARKER:
                return self._act_as(origin, msg)
            operation = body[0][:64] if body and not msg.service.startswith(b"mmi.") else b""
            return self._decide(origin, msg.service, operation)
        if kind is Kind.READY:
            return self._decide(origin, msg.service, b"@ready")
        if self.authority.principal(name) is None:  # replies, heartbeats of a revoked worker
            return Denial(
                FORBIDDEN,
                f"not authorized: principal '{name}' is not active (rule {NOT_ACTIVE_RULE})",
                NOT_ACTIVE_RULE,
            )
        return None

    def _act_as(self, origin: Origin, msg: PeerMessage) -> Denial | Delegated:
        """A request ``origin`` sends for the principal named in its act-as prefix."""
        refused = self._decide(origin, _BROKER, _ACT_AS)
        if refused is not None:
            return Denial(
                FORBIDDEN,
                f"not authorized: principal '{origin.principal}' may not act for others"
                f" (rule {refused.rule})",
                refused.rule,
            )
        body = msg.body
        name = body[1].decode("utf-8", "replace") if len(body) > 1 else ""
        if self.authority.principal(name) is None:
            return Denial(
                FORBIDDEN,
                f"not authorized: principal '{name}', acted for by '{origin.principal}', is not"
                f" active (rule {NOT_ACTIVE_RULE})",
                NOT_ACTIVE_RULE,
            )
        acting = self._acting_origin(name, origin)
        operation = body[2][:64] if len(body) > 2 and not msg.service.startswith(b"mmi.") else b""
        denial = self._decide(acting, msg.service, operation)
        return Delegated(acting) if denial is None else denial

    def _acting_origin(self, name: str, via: Origin) -> Origin:
        key = (name, f"{via.peer} via {via.principal}")
        found = self._origins.get(key)
        if found is None:
            if len(self._origins) >= CACHE_LIMIT:
                self._origins.clear()
            roles = self.authority.roles(name)
            caller = encode_caller(Caller(name, roles, via.peer or None, via.principal))
            found = self._origins[key] = Origin(name, roles, via.peer, caller)
        return found

    def _decide(self, origin: Origin, service: bytes, operation: bytes) -> Denial | None:
        key = (origin.principal, service, operation)
        try:
            return self._decisions[key]
        except KeyError:
            pass
        if len(self._decisions) >= CACHE_LIMIT:
            self._decisions.clear()
        svc = service.decode("utf-8", "replace")
        op = operation.decode("utf-8", "replace")
        decision = self.authority.decide(origin.principal, origin.roles, svc, op)
        denial = None
        if not decision:
            what = f"register as worker of '{svc}'" if op == "@ready" else f"call '{svc}'"
            if op and op != "@ready":
                what += f" operation '{op}'"
            denial = Denial(
                FORBIDDEN,
                f"not authorized: principal '{origin.principal}' may not {what}"
                f" (rule {decision.rule})",
                decision.rule,
            )
        self._decisions[key] = denial
        return denial

    def _within_rate(self, name: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= CACHE_LIMIT:
                self._buckets.clear()
            bucket = self._buckets[name] = TokenBucket(self.rate_limit, self.rate_burst, now)
        return bucket.take(now)
