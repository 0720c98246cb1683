"""Authorization inside a service: the caller the broker passed, checked against the policy.

The broker already refuses a request its caller may not make to the *service*; a service
that knows finer objects (the state service's scopes and keys) asks again with them. A
:class:`Guard` holds the host's :class:`~plantd.identity.authority.Authority` (refreshed per
request, so a revocation or a policy edit counts from the next request) and the security
mode: an anonymous caller (no principal: the broker ran without CURVE) is served only when
the daemon runs with security off.

:meth:`Guard.ensure_fresh` refreshes once per event-loop iteration (as the broker does once
per drained batch) and is still exact per message: a request's handler runs at the earliest
in the iteration after its message was read, and the iteration's refresh is dropped before
that one starts, so every request is decided on a view read after its message arrived.

Where this host has no principals registry (a service on another host than the keyring),
the roles the broker sent with the caller decide: the caller prefix comes from the broker
over its authenticated connection and cannot be forged by a client.
"""

from __future__ import annotations

import asyncio

from plantd.identity.authority import Authority
from plantd.identity.policy import Access, Decision, Policy, access_of
from plantd.security.caller import Caller

#: the rule a denial names when an anonymous caller reaches a service in secure mode
ANONYMOUS_RULE = "anonymous"
#: the rule an anonymous caller is allowed by in insecure mode
INSECURE_RULE = "security-off"
UNAUTHORIZED = "unauthorized"
_OFF = frozenset({"off", "0", "false", "no", "insecure"})
_ON = frozenset({"on", "1", "true", "yes", "secure"})


class Guard:
    """Decides for one service whether the current caller may do an operation."""

    def __init__(self, authority: Authority | None, *, service: str, secure: bool) -> None:
        self.authority = authority
        self.service = service
        self.secure = secure
        self.denied = 0
        self._builtin = Policy()
        self._fresh = False  # refreshed in this event-loop iteration
        self._anonymous = Decision(not secure, INSECURE_RULE if not secure else ANONYMOUS_RULE)

    def refresh(self) -> None:
        """Pick up registry and policy changes (cheap when nothing changed)."""
        if self.authority is not None:
            self.authority.refresh()

    def ensure_fresh(self) -> None:
        """:meth:`refresh` unless already done in this event-loop iteration (a refresh is a
        ``PRAGMA`` and a ``stat``: once per request was a good part of a write's cost)."""
        if self._fresh or self.authority is None:
            return
        self.authority.refresh()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: every call refreshes
            return
        self._fresh = True
        loop.call_soon(self._expire)

    def _expire(self) -> None:
        self._fresh = False

    def decide(
        self,
        caller: Caller,
        operation: str,
        scope: str | None = None,
        key: str | None = None,
        access: Access | None = None,
    ) -> Decision:
        if caller.principal is None:
            return self._anonymous
        auth = self.authority
        if auth is None or not auth.has_registry:
            policy = auth.policy if auth is not None else self._builtin
            return policy.decide(
                caller.principal, caller.roles, self.service, operation, scope, key, access
            )
        return auth.decide(caller.principal, None, self.service, operation, scope, key, access)

    def roles_of(self, caller: Caller) -> tuple[str, ...]:
        """The roles that decide for ``caller`` (the registry's, else the broker's)."""
        auth = self.authority
        if caller.principal and auth is not None and auth.has_registry:
            return auth.roles(caller.principal)
        return caller.roles

    def denial(
        self,
        caller: Caller,
        decision: Decision,
        operation: str,
        scope: str | None = None,
        key: str | None = None,
        access: Access | None = None,
    ) -> str:
        """The one-line reason a person reads: which rule refused whom what."""
        level = access or access_of(self.service, operation)
        roles = ", ".join(self.roles_of(caller)) or "no roles"
        who = f"{caller.principal} ({roles})" if caller.principal else "anonymous caller"
        where = ""
        if scope is not None:
            where += f" in scope {scope!r}"
        if key is not None:
            where += f" on key {key!r}"
        if decision.rule == ANONYMOUS_RULE:
            why = "security is on and the request carries no principal"
        else:
            why = f"{who} may not {level.name} with {operation}{where}"
        return f"not authorized: rule {decision.rule!r} refuses it: {why}"


__all__ = ["ANONYMOUS_RULE", "INSECURE_RULE", "UNAUTHORIZED", "Guard"]
