"""The operations of ``org.plantd.Identity``: who am I, the principals, the policy, the audit.

Each operation takes the request document and returns the reply document (``ok(...)`` or an
error naming the field). The service never makes or holds a secret key: ``add`` and
``rotate`` take the principal's public key (``plant identity`` makes the pair on the
caller's host and keeps the secret there). The caller is the one the broker passed
(``current_caller()``); every operation is checked against the policy with it (the broker
checks the service too; this service knows what each operation is). Changes to principals
and to the policy are audited with the caller as principal and published on the event bus
like the state service's rows. ``policy-set`` replaces the policy file (checked, never
locking the admins out, optimistic concurrency by digest); :meth:`IdentityService.watch_policy`
audits a change of the file nobody made through it (a hand edit) as
``policy-changed-on-disk``.

SQLite work (the registry, audit queries and verification) runs on a thread
(``asyncio.to_thread``) with a connection of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from plantd.identity import policyfile
from plantd.identity.audit import (
    MAX_PAGE,
    AuditLog,
    host_sources,
    merged_query,
    verify_sources,
)
from plantd.identity.auditwriter import AuditWriter, Entry
from plantd.identity.guard import UNAUTHORIZED, Guard
from plantd.identity.policy import IDENTITY_SERVICE, Policy, PolicyError, parse_policy
from plantd.identity.principals import STATES, Principal, Registry, validate_name
from plantd.protocol.envelope import INVALID_ARGUMENT, error_doc, ok
from plantd.security.caller import current_caller
from plantd.security.errors import IdentityError, InvalidArgument
from plantd.security.keys import Keyring

log = logging.getLogger("plantd.identity.service")

SERVICE = IDENTITY_SERVICE


def _str(doc: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidArgument(f"missing field '{name}'", name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"field '{name}': expected a non-empty string", name)
    return value


def _roles(doc: dict[str, Any]) -> list[str]:
    value = doc.get("roles", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise InvalidArgument("field 'roles': expected a list of role names", "roles")
    return value


def _public_key(doc: dict[str, Any]) -> str:
    key = _str(doc, "public_key", required=False)
    if key is None:
        raise InvalidArgument(
            "missing field 'public_key': the Identity service keeps no secret keys; make the"
            " pair on the principal's host ('plant identity add/rotate' does) and send its"
            " public key",
            "public_key",
        )
    return key


def _int(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"field '{name}': expected an integer", name)
    return value


def _number(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"field '{name}': expected a number (epoch seconds)", name)
    return float(value)


class IdentityService:
    """The registry, policy and audit of one keyring, served to authorized callers."""

    def __init__(self, keyring: Keyring, guard: Guard, audit: AuditWriter) -> None:
        self.keyring = keyring
        self.guard = guard
        self.audit = audit
        self.requests = 0
        self.denied = 0
        self._ops: dict[str, Callable[[Any], Any]] | None = None
        #: the policy file as this service last installed or saw it (None: not looked yet);
        #: one policy change at a time (a set, or the look for hand edits)
        self._policy_lock = asyncio.Lock()
        self._policy_digest: str | None = None
        self._policy_known: Policy | None = None
        self._policy_stamp: tuple[int, int, int] | None = None

    def operations(self) -> dict[str, Callable[[Any], Any]]:
        """Wire name -> handler (JSON in, reply document out; ``audit-list`` may stream)."""
        if self._ops is not None:
            return self._ops
        table: dict[str, Callable[[dict[str, Any]], Any]] = {
            "whoami": self.whoami,
            "list": self.list_principals,
            "show": self.show,
            "pending": self.pending,
            "add": self.add,
            "revoke": self.revoke,
            "rotate": self.rotate,
            "accept": self.accept,
            "reject": self.reject,
            "policy-get": self.policy_get,
            "policy-check": self.policy_check,
            "policy-set": self.policy_set,
            "policy-reload": self.policy_reload,
            "audit-verify": self.audit_verify,
        }
        ops: dict[str, Callable[[Any], Any]] = {
            name: self._checked(name, fn) for name, fn in table.items()
        }
        ops["audit-list"] = self.audit_list
        self._ops = ops
        return ops

    # ------------------------------------------------------------------ plumbing
    def _authorize(self, operation: str) -> dict[str, Any] | None:
        """The refusal document, or None when the caller may do ``operation``."""
        self.requests += 1
        caller = current_caller()
        self.guard.refresh()
        decision = self.guard.decide(caller, operation)
        if decision.allowed:
            return None
        self.denied += 1
        message = self.guard.denial(caller, decision, operation)
        log.warning("%s (peer %s)", message, caller.peer or "?")
        return error_doc(UNAUTHORIZED, message, rule=decision.rule)

    def _checked(self, operation: str, fn: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
        async def handle(doc: Any) -> dict[str, Any]:
            refused = self._authorize(operation)
            if refused is not None:
                await self._record_denial(operation, refused["rule"])
                return refused
            if doc is None:
                doc = {}
            if not isinstance(doc, dict):
                return error_doc(INVALID_ARGUMENT, f"{operation}: request must be a JSON object")
            try:
                return await fn(doc)  # type: ignore[no-any-return]
            except IdentityError as exc:
                extra = {"field": exc.field} if isinstance(exc, InvalidArgument) else {}
                return error_doc(exc.code, f"{operation}: {exc}", **extra)

        return handle

    async def _record_denial(self, operation: str, rule: str) -> None:
        caller = current_caller()
        await self._record(
            Entry(
                principal=caller.label,
                peer=caller.peer,
                service=SERVICE,
                operation=operation,
                outcome=f"denied:{rule}",
            )
        )

    async def _record(self, entry: Entry) -> None:
        try:
            await self.audit.record(entry)
        except Exception as exc:
            log.error("audit: row not recorded: %s", exc)

    async def _registry(self, fn: Callable[[Registry], Any]) -> Any:
        def run() -> Any:
            with Registry(self.keyring) as reg:
                return fn(reg)

        return await asyncio.to_thread(run)

    async def _change(
        self, operation: str, fn: Callable[[Registry], Any], old: Any = None
    ) -> dict[str, Any]:
        """Apply a registry change, audit it, answer with the principal."""
        result = await self._registry(fn)
        p = result[0] if isinstance(result, tuple) else result
        caller = current_caller()
        await self._record(
            Entry(
                principal=caller.label,
                peer=caller.peer,
                service=SERVICE,
                operation=operation,
                scope="identity",
                key=p.name,
                old=old,
                new={"state": p.state, "roles": list(p.roles), "public_key": p.public_key},
                outcome="ok",
            )
        )
        self.guard.refresh()
        return ok(p.to_json())

    async def _get(self, name: str) -> Principal:
        p: Principal = await self._registry(lambda reg: reg.get(name))
        return p

    # ------------------------------------------------------------------ operations
    async def whoami(self, _doc: dict[str, Any]) -> dict[str, Any]:
        """The caller as the broker passed it, and its registry entry when there is one."""
        caller = current_caller()
        data: dict[str, Any] = {
            "principal": caller.principal,
            "roles": list(self.guard.roles_of(caller)),
            "peer": caller.peer,
            "secure": self.guard.secure,
        }
        auth = self.guard.authority
        p = auth.principal(caller.principal) if auth is not None else None
        if p is not None:
            data.update(kind=p.kind, state=p.state, public_key=p.public_key)
        return ok(data)

    async def list_principals(self, doc: dict[str, Any]) -> dict[str, Any]:
        state = _str(doc, "state", required=False)
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state: {state!r} is not one of {', '.join(STATES)}", "state")
        items: list[Principal] = await self._registry(lambda reg: reg.list_principals(state))
        return ok({"principals": [p.to_json() for p in items], "count": len(items)})

    async def show(self, doc: dict[str, Any]) -> dict[str, Any]:
        return ok((await self._get(str(_str(doc, "name")))).to_json())

    async def pending(self, _doc: dict[str, Any]) -> dict[str, Any]:
        return await self.list_principals({"state": "pending"})

    async def add(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = validate_name(str(_str(doc, "name")))
        roles = _roles(doc)
        kind = _str(doc, "kind", required=False) or "person"
        public_key = _public_key(doc)
        if doc.get("pending") is True:
            return await self._change("add", lambda r: r.add_pending(name, public_key, kind))
        return await self._change(
            "add", lambda r: r.add(name, roles, kind=kind, public_key=public_key)
        )

    async def revoke(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = str(_str(doc, "name"))
        old = await self._get(name)
        return await self._change("revoke", lambda r: r.revoke(name), old={"state": old.state})

    async def rotate(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = str(_str(doc, "name"))
        public_key = _public_key(doc)
        old = await self._get(name)
        return await self._change(
            "rotate", lambda r: r.rotate(name, public_key), old={"public_key": old.public_key}
        )

    async def accept(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = str(_str(doc, "name"))
        roles = _roles(doc)
        return await self._change(
            "accept", lambda r: r.accept(name, roles), old={"state": "pending"}
        )

    async def reject(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = str(_str(doc, "name"))
        return await self._change("reject", lambda r: r.reject(name), old={"state": "pending"})

    async def policy_get(self, _doc: dict[str, Any]) -> dict[str, Any]:
        """The policy file's text and digest and what is in force; a hand edit of the file
        not yet in the audit trail is recorded first."""
        await self.watch_policy()
        path = self.keyring.policy
        text = await asyncio.to_thread(policyfile.read_text, path)
        auth = self.guard.authority
        policy = auth.policy if auth is not None else None
        return ok(
            {
                "file": str(path),
                "text": text,
                "digest": policyfile.digest(text),
                "rules": [r.name for r in policy.rules] if policy else [],
                "roles": dict(policy.inherits) if policy else {},
                "error": auth.policy_error if auth is not None else None,
            }
        )

    async def policy_check(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What the policy decides for a request: ``principal`` (default: the caller) or
        ``roles`` (decide for a holder of these roles), ``service``, ``operation``, ``scope``,
        ``key``; parses ``text`` instead of the current policy when given (check a file
        before installing it)."""
        caller = current_caller()
        given_roles = _roles(doc) if "roles" in doc else None
        principal = _str(doc, "principal", required=False) or (
            caller.principal if given_roles is None else None
        )
        service = str(_str(doc, "service"))
        operation = str(_str(doc, "operation"))
        scope = _str(doc, "scope", required=False)
        key = _str(doc, "key", required=False)
        auth = self.guard.authority
        text = _str(doc, "text", required=False)
        if principal is None and given_roles is None:
            raise InvalidArgument("principal: the caller has none; name one", "principal")
        if given_roles is not None or text is not None:
            policy = parse_policy(text, "text") if text is not None else self._policy_now()
            roles: tuple[str, ...] | list[str]
            if given_roles is not None:
                roles = given_roles
            else:
                roles = auth.roles(principal) if auth is not None else ()
            decision = policy.decide(principal or "", roles, service, operation, scope, key)
        elif auth is not None:
            decision = auth.decide(principal, None, service, operation, scope, key)
            roles = auth.roles(principal)
        else:
            raise InvalidArgument("principal: no registry on this host", "principal")
        return ok(
            {
                "principal": principal,
                "roles": list(roles),
                "allowed": decision.allowed,
                "rule": decision.rule,
            }
        )

    def _policy_now(self) -> Policy:
        auth = self.guard.authority
        return auth.policy if auth is not None else Policy()

    async def policy_set(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Replace the policy file with ``text`` (checked first: a policy that does not parse
        or would refuse the caller ``policy-set`` is never installed); with ``prev_digest``
        only if the file still has that digest (``conflict`` otherwise). Audited as
        ``policy-set``, old -> new digests and the rule names added/removed/changed; the
        broker and the services pick the file up by its mtime on their next message."""
        text = doc.get("text")
        if not isinstance(text, str):
            raise InvalidArgument("field 'text': expected the policy text (YAML)", "text")
        prev = doc.get("prev_digest")
        prev_digest = None if prev is None else policyfile.validate_digest(prev)
        request_id = _str(doc, "request_id", required=False)
        path = self.keyring.policy
        try:
            policy = parse_policy(text, path.name)
        except PolicyError as exc:
            raise InvalidArgument(str(exc), "text") from None
        caller = current_caller()
        if caller.principal is not None:
            reason = policyfile.lockout(policy, [(caller.principal, self.guard.roles_of(caller))])
            if reason is not None:
                raise InvalidArgument(reason, "text")
        new_digest = policyfile.digest(text)
        async with self._policy_lock:
            await self._look_at_policy()  # a hand edit before this one is recorded first
            if prev_digest is None and self._policy_digest == new_digest:
                old_digest = new_digest
            else:
                old_digest = await asyncio.to_thread(policyfile.replace, path, text, prev_digest)
            changed = old_digest != new_digest
            changes = policyfile.rule_changes(self._policy_known, policy)
            if changed:
                await self._record(
                    Entry(
                        principal=caller.label,
                        peer=caller.peer,
                        service=SERVICE,
                        operation=policyfile.SET_OPERATION,
                        scope=policyfile.POLICY_SCOPE,
                        key=path.name,
                        old={"digest": old_digest},
                        new={"digest": new_digest, **changes},
                        request_id=request_id,
                        outcome="ok",
                    )
                )
            self._policy_digest, self._policy_known = new_digest, policy
            self._policy_stamp = policyfile.file_stamp(path)
            self.guard.refresh()
        return ok(
            {
                "file": str(path),
                "digest": new_digest,
                "previous": old_digest,
                "changed": changed,
                "rules": [r.name for r in policy.rules],
                **{k: v for k, v in changes.items() if k != "rules"},
            }
        )

    async def watch_policy(self) -> None:
        """Audit a change of the policy file nobody made through ``policy-set`` (a hand
        edit) as ``policy-changed-on-disk`` by ``local:file``; the daemon calls this
        periodically (a ``stat`` when nothing changed)."""
        async with self._policy_lock:
            await self._look_at_policy()

    async def _look_at_policy(self) -> None:
        path = self.keyring.policy
        stamp = policyfile.file_stamp(path)
        if self._policy_digest is not None and stamp == self._policy_stamp:
            return
        text = await asyncio.to_thread(policyfile.read_text, path)
        now = policyfile.digest(text)
        self._policy_stamp = stamp
        if now == self._policy_digest:
            return
        try:
            policy: Policy | None = parse_policy(text or "", path.name)
            problem = None
        except PolicyError as exc:
            policy, problem = None, str(exc)
        # the last digest the trail recorded: after a restart, or a 'plant policy set --local'
        recorded = await asyncio.to_thread(self._recorded_policy_digest)
        if now != recorded:
            new: dict[str, Any] = {"digest": now}
            if policy is not None:
                new.update(policyfile.rule_changes(self._policy_known, policy))
            if problem is not None:
                new["error"] = problem  # the last good policy stays in force
            log.warning("policy file %s changed on disk (digest %s)", path, now[:12])
            await self._record(
                Entry(
                    principal=policyfile.FILE_PRINCIPAL,
                    service=SERVICE,
                    operation=policyfile.CHANGED_ON_DISK,
                    scope=policyfile.POLICY_SCOPE,
                    key=path.name,
                    old={"digest": self._policy_digest or recorded},
                    new=new,
                    outcome="ok",
                )
            )
        self._policy_digest, self._policy_known = now, policy

    def _recorded_policy_digest(self) -> str:
        """The new digest of the trail's last policy row (blocking); the empty policy's
        when there is none."""
        path = self.keyring.audit
        last = policyfile.EMPTY_DIGEST
        if not path.exists():
            return last
        with AuditLog(path, read_only=True) as trail:
            after = None
            while True:
                page = trail.query(scope=policyfile.POLICY_SCOPE, after=after, limit=MAX_PAGE)
                for row in page.rows:
                    new = row["new"]
                    if isinstance(new, dict) and isinstance(new.get("digest"), str):
                        last = new["digest"]
                if not page.more:
                    return last
                after = page.next

    async def policy_reload(self, _doc: dict[str, Any]) -> dict[str, Any]:
        auth = self.guard.authority
        if auth is None:
            return ok({"reloaded": False})
        auth.refresh(force=True)
        return ok({"reloaded": True, "rules": len(auth.policy.rules), "error": auth.policy_error})

    async def audit_list(self, doc: Any) -> AsyncIterator[dict[str, Any]]:
        """Rows oldest first, paged by seq (shared paging contract); ``stream: true`` sends
        every page as a PARTIAL reply (up to ``max_records`` rows)."""
        refused = self._authorize("audit-list")
        if refused is not None:
            await self._record_denial("audit-list", refused["rule"])
            yield refused
            return
        params = doc if isinstance(doc, dict) else {}
        try:
            filters = {
                "since": _number(params, "since"),
                "principal": _str(params, "principal", required=False),
                "scope": _str(params, "scope", required=False),
                "key": _str(params, "key", required=False),
            }
            stream = params.get("stream", False)
            if not isinstance(stream, bool):
                raise InvalidArgument("field 'stream': expected true or false", "stream")
            total = _int(params, "max_records")
        except InvalidArgument as exc:
            yield error_doc(exc.code, f"audit-list: {exc}", field=exc.field)
            return
        after, limit, sent = params.get("after"), params.get("limit"), 0
        while True:
            try:
                page = await asyncio.to_thread(self._query, filters, after, limit)
            except InvalidArgument as exc:
                yield error_doc(exc.code, f"audit-list: {exc}", field=exc.field)
                return
            sent += len(page["rows"])
            if stream and total is not None and sent >= total:
                page.update(more=False, next=None)
            yield ok(page)
            if not stream or not page["more"]:
                return
            after = page["next"]

    def _query(self, filters: dict[str, Any], after: Any, limit: Any) -> dict[str, Any]:
        """A page of every chain on this host merged by time (docs/security.md)."""
        page = merged_query(host_sources(self.keyring.audit), after=after, limit=limit, **filters)
        return {
            "rows": page.rows,
            "count": len(page.rows),
            "more": page.more,
            "next": page.next,
            "max_page": MAX_PAGE,
        }

    async def audit_verify(self, _doc: dict[str, Any]) -> dict[str, Any]:
        """Every chain on this host verified on its own; the first broken one is named."""
        result = await asyncio.to_thread(verify_sources, host_sources(self.keyring.audit))
        return ok({**result, "head": self.audit.head_doc()})


__all__ = ["SERVICE", "IdentityService"]
