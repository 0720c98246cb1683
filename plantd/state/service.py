"""MDP operations of ``org.plantd.State``: the wire layer around :class:`StateStore`.

Requests are ``[operation, JSON object]`` with the Go plantd field names (``service`` is the
scope; ``scope`` is accepted too) so its clients keep working. Replies are
``{"success": true, "data": {...}}`` or ``{"success": false, "error", "code", ...extra}``.
Every malformed request gets a precise error naming the field; nothing a client sends can
stop the daemon from serving.

The service also publishes every committed change on the state bus (topic = scope) from a
store listener, i.e. in commit order and before the writer is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from plantd.identity.auditwriter import AuditWriter, Entry
from plantd.identity.guard import UNAUTHORIZED, Guard
from plantd.identity.policy import Access, Decision
from plantd.protocol import jsoncodec
from plantd.protocol.envelope import (
    BAD_REQUEST,
    INTERNAL,
    INVALID_ARGUMENT,
    INVALID_JSON,
    NOT_FOUND,
    UNKNOWN_OPERATION,
    error_doc,
    ok,
)
from plantd.security.caller import Caller, current_caller
from plantd.state.audit import AuditContext, StoreAudit
from plantd.state.backend import StateBackend
from plantd.state.errors import Compacted, Conflict, StateError
from plantd.storage.paging import QueryError, bad_field, json_type, parse_limit
from plantd.vocabulary import STATE_SERVICE

__all__ = ["OPERATIONS", "SERVICE", "StateService", "error_doc"]

SERVICE = STATE_SERVICE

#: failpoint name for the fault suite: exit hard after a write committed, before the reply
CRASH_AFTER_COMMIT = "crash-after-commit"

#: replies stay below the broker's default 1 MiB message limit
DEFAULT_REPLY_BUDGET = 768 * 1024
#: page size of list-keys, list-scopes and export without ``limit``, and its maximum
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000

log = logging.getLogger("plantd.state.service")

_ABSENT = object()


class Reject(Exception):
    """A request refused before it reaches the store (bad JSON, wrong type, missing field)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.doc = error_doc(code, message, **extra)


_dumps = jsoncodec.dumps


class Request:
    """One decoded request document with typed, precisely-reported field access."""

    def __init__(self, op: str, doc: dict[str, Any], allowed: frozenset[str]) -> None:
        self.op = op
        self.doc = doc
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise Reject(
                INVALID_ARGUMENT,
                f"{op}: unknown field(s) {', '.join(map(repr, unknown))}"
                f" (allowed: {', '.join(sorted(allowed)) or 'none'})",
                field=unknown[0],
            )

    def _reject(self, exc: QueryError) -> Reject:
        """The refusal of ``exc`` (the shared paging and field checks), naming the operation."""
        return Reject(INVALID_ARGUMENT, f"{self.op}: {exc}", field=exc.field, **exc.extra)

    def _bad(self, name: str, expected: str, value: Any) -> Reject:
        return self._reject(bad_field(name, expected, value))

    def missing(self, name: str) -> Reject:
        return Reject(INVALID_ARGUMENT, f"{self.op}: missing field '{name}'", field=name)

    def scope(self) -> str:
        """The scope: required."""
        value = self.opt_scope()
        if value is None:
            raise Reject(
                INVALID_ARGUMENT,
                f"{self.op}: missing field 'service' (the scope; 'scope' is accepted too)",
                field="service",
            )
        return value

    def opt_scope(self) -> str | None:
        """``service`` (Go plantd) or ``scope``; both given must agree."""
        svc, scope = self.doc.get("service"), self.doc.get("scope")
        if svc is not None and scope is not None and svc != scope:
            raise Reject(
                INVALID_ARGUMENT,
                f"{self.op}: 'service' ({svc!r}) and 'scope' ({scope!r}) disagree; send one",
                field="service",
            )
        name = "service" if svc is not None else "scope"
        value = svc if svc is not None else scope
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(name, "a string", value)
        if not value:
            raise Reject(INVALID_ARGUMENT, f"{self.op}: field '{name}' is empty", field=name)
        return value

    def string(self, name: str) -> str:
        """A required non-empty string field."""
        value = self.opt_string(name)
        if value is None:
            raise self.missing(name)
        if not value:
            raise Reject(INVALID_ARGUMENT, f"{self.op}: field '{name}' is empty", field=name)
        return value

    def opt_string(self, name: str) -> str | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(name, "a string", value)
        return value

    def integer(self, name: str, *, minimum: int = 0) -> int | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, f"an integer >= {minimum}", value)
        if value < minimum:
            raise Reject(
                INVALID_ARGUMENT,
                f"{self.op}: field '{name}' must be >= {minimum}, got {value}",
                field=name,
            )
        return value

    def number(self, name: str) -> float | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(name, "a number", value)
        if not math.isfinite(value) or value <= 0:
            raise Reject(
                INVALID_ARGUMENT,
                f"{self.op}: field '{name}' must be a number > 0, got {value}",
                field=name,
            )
        return float(value)

    def limit(self, default: int, maximum: int) -> int:
        """The page size: ``limit`` (1..maximum), else ``default``."""
        try:
            return parse_limit(self.doc, default, maximum)
        except QueryError as exc:
            raise self._reject(exc) from None

    def after_name(self) -> str | None:
        """A name cursor: ``after`` = the last name of the previous page."""
        value = self.doc.get("after")
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._bad("after", "the 'next' name of the previous page", value)
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.doc.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "true or false", value)
        return value


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


_SCOPE = ("service", "scope")
_WRITE = ("request_id",)
_PAGE = ("after", "limit", "stream")

#: wire operation -> (method name, allowed request fields)
OPERATIONS: dict[str, tuple[str, frozenset[str]]] = {
    "create-scope": ("create_scope", _fields(*_SCOPE, *_WRITE)),
    "delete-scope": ("delete_scope", _fields(*_SCOPE, *_WRITE)),
    "list-scopes": ("list_scopes", _fields("prefix", *_PAGE)),
    "list-keys": ("list_keys", _fields(*_SCOPE, "prefix", "glob", "values", *_PAGE)),
    "state-get": ("get", _fields(*_SCOPE, "key")),
    "get": ("get", _fields(*_SCOPE, "key")),
    "state-set": (
        "set",
        _fields(
            *_SCOPE, *_WRITE, "key", "value", "prev_revision", "if_absent", "ttl", "return_prev"
        ),
    ),
    "set": (
        "set",
        _fields(
            *_SCOPE, *_WRITE, "key", "value", "prev_revision", "if_absent", "ttl", "return_prev"
        ),
    ),
    "delete": ("delete", _fields(*_SCOPE, *_WRITE, "key", "prev_revision")),
    "txn": ("txn", _fields(*_SCOPE, *_WRITE, "ops")),
    "watch": ("watch", _fields(*_SCOPE, "revision", *_PAGE)),
    "backup": ("backup", _fields("path", "overwrite")),
    "export": ("export", _fields(*_PAGE)),
    "import": ("import_", _fields(*_WRITE, "doc", "replace")),
    "health": ("health", _fields(*_SCOPE)),
}

WRITE_OPERATIONS = frozenset(
    {"create-scope", "delete-scope", "state-set", "set", "delete", "txn", "import"}
)
#: operations that page; with ``"stream": true`` they send every page as a PARTIAL reply
PAGED_OPERATIONS = frozenset({"list-scopes", "list-keys", "watch", "export"})
#: operations that leave a row per change in the audit trail (backup writes a file)
AUDITED_OPERATIONS = WRITE_OPERATIONS | {"backup"}
#: operations whose reply may hold scopes the caller may not read (filtered after the call)
_FILTERED_OPERATIONS = frozenset({"list-scopes", "watch", "export"})
#: operations whose target is one key (the others name a scope, many keys, or nothing)
_KEY_OPERATIONS = frozenset({"get", "state-get", "set", "state-set", "delete"})


class StateService:
    """Dispatches wire operations onto a store; publishes the store's change feed.

    ``publish(topic, doc) -> bool`` is called for every committed change (a non-blocking
    bus publisher); ``failpoint`` is for the fault suite only.
    """

    def __init__(
        self,
        store: StateBackend,
        *,
        publish: Callable[[str, dict[str, Any]], bool] | None = None,
        failpoint: str = "",
        watch_limit: int = 1000,
        reply_budget: int = DEFAULT_REPLY_BUDGET,
        service: str = SERVICE,
        guard: Guard | None = None,
        audit: AuditWriter | StoreAudit | None = None,
        audit_wait: bool = True,
    ) -> None:
        failpoint = failpoint.strip()
        if failpoint and failpoint != CRASH_AFTER_COMMIT:
            raise ValueError(f"unknown failpoint {failpoint!r} (known: {CRASH_AFTER_COMMIT})")
        self.store = store
        self.service = service
        self.failpoint = failpoint
        self.watch_limit = watch_limit
        self.reply_budget = reply_budget
        self.started = time.monotonic()
        self.requests = 0
        self.rejected = 0
        self.published = 0
        self.publish_dropped = 0
        self._publish = publish
        self.guard = guard
        self.audit = audit
        #: writes leave their audit rows in their own transaction (the SQLite store); else
        #: (etcd) the rows are recorded after the write, old values read before it
        self.audit_in_store = audit is not None and store.audits_in_transaction
        self.audit_wait = audit_wait
        self.denied = 0
        self.audit_failed = 0
        if publish is not None:
            store.add_listener(self._on_change)

    # ------------------------------------------------------------------ plumbing

    def _on_change(self, event: dict[str, Any]) -> None:
        """Store listener: runs on the committer in commit order; must never block."""
        assert self._publish is not None
        try:
            sent = self._publish(event["scope"], event)
        except Exception:
            log.exception("state bus publish failed")
            sent = False
        if sent:
            self.published += 1
        else:
            self.publish_dropped += 1

    def handlers(self) -> dict[str, Callable[[list[bytes]], Awaitable[list[bytes]]]]:
        """Raw MDP handlers (``body -> reply frames``) for every operation."""
        return {op: self._raw_handler(op) for op in OPERATIONS}

    def attach(self, worker: Any) -> None:
        """Register every operation on a :class:`plantd.client.Worker`."""
        for op, handler in self.handlers().items():
            worker.add_operation(op, handler, raw=True)

    def _raw_handler(self, op: str) -> Callable[[list[bytes]], Any]:
        def encode(doc: dict[str, Any]) -> list[bytes]:
            try:
                return [_dumps(doc)]
            except (TypeError, ValueError) as exc:  # never crash the reply
                return [_dumps(error_doc(INTERNAL, f"{op}: reply not encodable: {exc}"))]

        async def handle(body: list[bytes]) -> list[bytes]:
            return encode(await self.dispatch(op, body[1:]))

        async def handle_parts(body: list[bytes]) -> AsyncIterator[list[bytes]]:
            # the worker sends every part but the last as a PARTIAL reply
            async for doc in self.dispatch_parts(op, body[1:]):
                yield encode(doc)

        return handle_parts if op in PAGED_OPERATIONS else handle

    @staticmethod
    def _decode(op: str, frames: list[bytes]) -> dict[str, Any]:
        if len(frames) > 1:
            raise Reject(
                BAD_REQUEST,
                f"{op}: expected [operation, JSON], got {len(frames) + 1} frames",
            )
        if not frames or not frames[0].strip():
            return {}
        try:
            doc = jsoncodec.loads(frames[0])
        except UnicodeDecodeError as exc:
            raise Reject(INVALID_JSON, f"{op}: request is not UTF-8: {exc}") from None
        except ValueError as exc:
            raise Reject(INVALID_JSON, f"{op}: request is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Reject(
                INVALID_ARGUMENT,
                f"{op}: request must be a JSON object, got {json_type(doc)}",
            )
        return doc

    def _request(self, op: str, frames: list[bytes]) -> Request | dict[str, Any]:
        """The decoded request, or the error document refusing it."""
        self.requests += 1
        try:
            _method, allowed = OPERATIONS[op]
        except KeyError:
            self.rejected += 1
            known = ", ".join(sorted(OPERATIONS))
            return error_doc(UNKNOWN_OPERATION, f"unknown operation {op!r} (known: {known})")
        try:
            return Request(op, self._decode(op, frames), allowed)
        except Reject as exc:
            self.rejected += 1
            return exc.doc

    async def _guarded(self, op: str, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await one operation; every failure becomes its error document."""
        try:
            return await call
        except Exception as exc:
            return self._refusal(op, exc)

    def _refusal(self, op: str, exc: Exception) -> dict[str, Any]:
        """The error document of a failed operation."""
        self.rejected += 1
        if isinstance(exc, Reject):
            return exc.doc
        if isinstance(exc, StateError):
            return self._error(exc)
        log.error("%s: handler failed", op, exc_info=exc)
        return error_doc(INTERNAL, f"{op}: {type(exc).__name__}: {exc}")

    async def dispatch(self, op: str, frames: list[bytes]) -> dict[str, Any]:
        """Serve one request (``frames`` = body after the operation frame); never raises."""
        req = self._request(op, frames)
        if not isinstance(req, Request):
            return req
        result = await self._guarded(op, self._serve(op, req))
        if (
            op in WRITE_OPERATIONS
            and self.failpoint == CRASH_AFTER_COMMIT
            and result.get("success") is True
        ):
            log.warning("failpoint %s: exiting after a committed %s", self.failpoint, op)
            os._exit(137)
        return result

    async def dispatch_parts(self, op: str, frames: list[bytes]) -> AsyncIterator[dict[str, Any]]:
        """Serve a paged operation: one page, or with ``stream`` every page (the last one
        has ``more: false``; an error ends the stream). ``export`` streams from one read
        snapshot; the others page by their cursor, like a client would."""
        req = self._request(op, frames)
        if not isinstance(req, Request):
            yield req
            return
        try:
            stream = req.boolean("stream")
        except Reject as exc:
            self.rejected += 1
            yield exc.doc
            return
        if not stream:
            yield await self._guarded(op, self._serve(op, req))
            return
        if op == "export":
            async for doc in self._export_stream(req):
                yield doc
            return
        while True:
            doc = await self._guarded(op, self._serve(op, req))
            yield doc
            if doc.get("success") is not True or not doc["data"]["more"]:
                return
            req.doc = {**req.doc, "after": doc["data"]["next"]}
            req.doc.pop("revision", None)  # watch: "after" continues the scan

    # ------------------------------------------------------------------ authorization, audit

    async def _serve(self, op: str, req: Request) -> dict[str, Any]:
        """Authorize the caller for every scope/key the request touches, run it, then audit
        it (writes) or drop what the caller may not read (listings of many scopes)."""
        method = getattr(self, "op_" + OPERATIONS[op][0])
        if self.guard is None and self.audit is None:
            return await method(req)  # type: ignore[no-any-return]
        caller = current_caller()
        if op == "import":
            targets = await self._import_targets(req)
        else:
            targets = self._targets(op, req)
        guard = self.guard
        if guard is not None:
            guard.ensure_fresh()
            for scope, key, access in targets:
                decision = guard.decide(caller, op, scope, key, access)
                if not decision.allowed:
                    await self._refuse(caller, op, req, scope, key, access, decision)
        audited = self.audit is not None and op in AUDITED_OPERATIONS
        if self.audit_in_store and op != "backup":
            audited = False  # the store commits the rows with the write
        old = await self._old_values(targets) if audited and op != "import" else {}
        result: dict[str, Any] = await method(req)
        if audited and result.get("success") is True:
            await self._audit_write(caller, op, req, targets, old, result["data"])
        elif guard is not None and op in _FILTERED_OPERATIONS and result.get("success") is True:
            await self._filter_readable(caller, op, req, result["data"])
        return result

    def _targets(self, op: str, req: Request) -> list[tuple[str | None, str | None, Access | None]]:
        """``(scope, key, access)`` of everything the request reads or writes; access None
        means the operation's own level (import: :meth:`_import_targets`)."""
        if op in _KEY_OPERATIONS:
            return [(req.scope(), req.string("key"), None)]
        if op == "txn":
            default = req.opt_scope()
            ops = req.doc.get("ops")
            out: list[tuple[str | None, str | None, Access | None]] = []
            for raw in ops if isinstance(ops, list) else ():
                if not isinstance(raw, dict):
                    continue  # op_txn refuses the whole request
                scope = raw.get("scope", raw.get("service", default))
                key = raw.get("key")
                level = Access.read if raw.get("op") == "check" else Access.write
                out.append((str(scope) if scope is not None else None, str(key), level))
            return out
        if op in ("list-scopes", "export", "backup"):
            return [(None, None, None)]
        return [(req.opt_scope(), None, None)]  # scope ops, list-keys, watch, health

    async def _import_targets(
        self, req: Request
    ) -> list[tuple[str | None, str | None, Access | None]]:
        """The scopes an import writes (with ``replace``: every scope that exists now too)."""
        doc = req.doc.get("doc")
        scopes = doc.get("scopes") if isinstance(doc, dict) else None
        names = set(scopes) if isinstance(scopes, dict) else set()
        if req.boolean("replace"):  # replace deletes every scope that exists now
            names |= {s["scope"] for s in await self.store.list_scopes()}
        return [(str(n), None, None) for n in sorted(names, key=str)]

    async def _authorize(
        self,
        caller: Caller,
        op: str,
        req: Request,
        scope: str | None,
        key: str | None,
        access: Access | None,
    ) -> None:
        """Raise the ``unauthorized`` refusal (audited) unless the caller may do this."""
        assert self.guard is not None
        decision = self.guard.decide(caller, op, scope, key, access)
        if not decision.allowed:
            await self._refuse(caller, op, req, scope, key, access, decision)

    async def _refuse(
        self,
        caller: Caller,
        op: str,
        req: Request,
        scope: str | None,
        key: str | None,
        access: Access | None,
        decision: Decision,
    ) -> NoReturn:
        """Count, log and audit a denial, then raise its ``unauthorized`` refusal."""
        assert self.guard is not None
        self.denied += 1
        self.guard.denied += 1
        message = self.guard.denial(caller, decision, op, scope, key, access)
        log.warning("%s (peer %s)", message, caller.peer or "?")
        await self._record(
            Entry(
                principal=caller.label,
                peer=caller.peer,
                service=self.service,
                operation=op,
                scope=scope,
                key=key,
                outcome=f"denied:{decision.rule}",
                request_id=self._request_id(req),
            )
        )
        raise Reject(UNAUTHORIZED, message, rule=decision.rule)

    def _audit(self, req: Request) -> AuditContext | None:
        """Who asks for this write, for the rows the store commits with it (None: the store
        keeps no rows; see ``audit_in_store``)."""
        if not self.audit_in_store:
            return None
        caller = current_caller()
        return AuditContext(caller.label, self.service, req.op, caller.peer, self._request_id(req))

    @staticmethod
    def _request_id(req: Request) -> str | None:
        rid = req.doc.get("request_id")
        return rid if isinstance(rid, str) else None

    async def _filter_readable(
        self, caller: Caller, op: str, req: Request, data: dict[str, Any]
    ) -> None:
        """Leave out of a many-scope reply what the caller may not read (list-scopes, watch
        without a scope); refuse an export page holding such a scope."""
        assert self.guard is not None
        guard = self.guard

        def readable(scope: str) -> bool:
            return guard.decide(caller, op, scope, None, Access.read).allowed

        if op == "list-scopes":
            keep = [d for d in data["details"] if readable(d["scope"])]
            if len(keep) != len(data["details"]):
                data.update(details=keep, scopes=[d["scope"] for d in keep], count=len(keep))
        elif op == "watch" and req.opt_scope() is None:
            data["events"] = [e for e in data["events"] if readable(e["scope"])]
        elif op == "export":
            for scope in data["scopes"]:
                await self._authorize(caller, op, req, scope, None, Access.read)

    async def _old_values(
        self, targets: list[tuple[str | None, str | None, Access | None]]
    ) -> dict[tuple[str, str], Any]:
        """The values of the written keys just before the write (exact for a CAS write;
        like caput's Old). Absent keys are left out."""
        keys = [
            (s, k) for s, k, a in targets if s is not None and k is not None and a != Access.read
        ]
        if not keys:
            return {}

        async def one(scope: str, key: str) -> Any:
            try:
                return (await self.store.get(scope, key))["value"]
            except StateError:
                return _ABSENT

        values = await asyncio.gather(*(one(s, k) for s, k in keys))
        return {sk: v for sk, v in zip(keys, values, strict=True) if v is not _ABSENT}

    async def _audit_write(
        self,
        caller: Caller,
        op: str,
        req: Request,
        targets: list[tuple[str | None, str | None, Access | None]],
        old: dict[tuple[str, str], Any],
        data: dict[str, Any],
    ) -> None:
        """One audit row per changed key (per scope for scope operations, one for import
        and backup), with the old and new value and the revision."""
        base = Entry(
            principal=caller.label,
            peer=caller.peer,
            service=self.service,
            operation=op,
            outcome="ok",
            request_id=self._request_id(req),
        )
        rev = data.get("revision")
        entries: list[Entry] = []
        if op in ("set", "state-set", "delete"):
            scope, key, _ = targets[0]
            assert scope is not None and key is not None
            new = req.doc.get("value") if op != "delete" else None
            entries.append(
                replace(
                    base, scope=scope, key=key, old=old.get((scope, key)), new=new, revision=rev
                )
            )
        elif op == "txn":
            ops = req.doc["ops"]
            for (scope, key, access), raw in zip(targets, ops, strict=True):
                if access == Access.read or scope is None or key is None:
                    continue
                new = raw.get("value") if raw.get("op") == "set" else None
                entries.append(
                    replace(
                        base,
                        scope=scope,
                        key=key,
                        old=old.get((scope, key)),
                        new=new,
                        revision=rev,
                    )
                )
        elif op in ("create-scope", "delete-scope"):
            summary = {k: v for k, v in data.items() if k in ("created", "deleted_keys", "status")}
            entries.append(replace(base, scope=targets[0][0], new=summary, revision=rev))
        elif op == "import":
            summary = {
                "scopes": [s for s, _, _ in targets],
                "keys": data.get("keys"),
                "replace": req.boolean("replace"),
            }
            entries.append(replace(base, new=summary, revision=rev))
        else:  # backup
            entries.append(replace(base, new={"path": req.doc.get("path")}))
        await self._record(*entries)

    async def _record(self, *entries: Entry) -> None:
        """Append to the audit trail (and wait until durable unless ``audit_wait`` is off);
        a failure is counted and logged, never turned into a failed reply for a write that
        is already committed."""
        if self.audit is None:
            return
        written = self.audit.submit(*entries)
        if not self.audit_wait:  # reply now; the rows follow in the next batch
            written.add_done_callback(self._audit_done)
            return
        try:
            await asyncio.shield(written)
        except Exception:
            self._audit_done(written)

    def _audit_done(self, written: asyncio.Future[Any]) -> None:
        exc = written.exception() if not written.cancelled() else None
        if exc is not None:
            self.audit_failed += 1
            log.error("audit: rows not recorded: %s", exc)

    @staticmethod
    def _error(exc: StateError) -> dict[str, Any]:
        doc = exc.to_dict()
        if isinstance(exc, Conflict):
            # the TUI and Go-style clients read the key's current revision as "revision"
            doc.setdefault("revision", exc.extra.get("current_revision", 0))
        return doc

    # ------------------------------------------------------------------ operations

    async def op_create_scope(self, req: Request) -> dict[str, Any]:
        scope = req.scope()
        res = await self.store.create_scope(
            scope, request_id=req.opt_string("request_id"), audit=self._audit(req)
        )
        return ok({**res, "status": "created" if res.get("created") else "exists"})

    async def op_delete_scope(self, req: Request) -> dict[str, Any]:
        scope = req.scope()
        rid = req.opt_string("request_id")
        res = await self.store.delete_scope(scope, request_id=rid, audit=self._audit(req))
        return ok({**res, "status": "deleted"})

    async def op_list_scopes(self, req: Request) -> dict[str, Any]:
        """A page of scopes by name (``count`` = scopes in this page, ``total`` = all that
        match ``prefix``)."""
        page = await self.store.list_scopes_page(
            prefix=req.opt_string("prefix") or "",
            after=req.after_name(),
            limit=req.limit(DEFAULT_PAGE, MAX_PAGE),
        )
        details = page["details"]
        return ok(
            {
                "scopes": [s["scope"] for s in details],
                "count": len(details),
                "details": details,
                "total": page["total"],
                "more": page["more"],
                "next": page["next"],
            }
        )

    async def op_list_keys(self, req: Request) -> dict[str, Any]:
        """A page of a scope's keys by name, bounded by ``limit`` and the reply budget."""
        scope = req.scope()
        page = await self.store.list_keys_page(
            scope,
            prefix=req.opt_string("prefix") or "",
            glob=req.opt_string("glob") or None,
            after=req.after_name(),
            limit=req.limit(DEFAULT_PAGE, MAX_PAGE),
            include_values=req.boolean("values", default=True),
            max_bytes=self.reply_budget,
        )
        keys = page["keys"]
        return ok(
            {
                "scope": scope,
                "keys": keys,
                "count": len(keys),
                "total": page["total"],
                "more": page["more"],
                "next": page["next"],
                "revision": page["revision"],
            }
        )

    async def op_get(self, req: Request) -> dict[str, Any]:
        scope = req.scope()
        key = req.string("key")
        return ok(await self.store.get(scope, key))

    async def op_set(self, req: Request) -> dict[str, Any]:
        scope = req.scope()
        key = req.string("key")
        if "value" not in req.doc:
            raise req.missing("value")
        value = req.doc["value"]
        prev = req.integer("prev_revision")
        if_absent = req.boolean("if_absent")
        ttl = req.number("ttl")
        rid = req.opt_string("request_id")
        previous: dict[str, Any] | None = None
        if req.boolean("return_prev"):
            # read just before the write (like caput): exact when the write is a CAS
            try:
                got = await self.store.get(scope, key)
                previous = {"value": got["value"], "mod_revision": got["mod_revision"]}
            except StateError as exc:
                if exc.code != NOT_FOUND:
                    raise
        res = await self.store.set(
            scope,
            key,
            value,
            ttl=ttl,
            prev_revision=prev,
            if_absent=if_absent,
            request_id=rid,
            audit=self._audit(req),
        )
        data = {**res, "value": value, "status": "set"}
        if req.boolean("return_prev"):
            data["prev"] = previous
        return ok(data)

    async def op_delete(self, req: Request) -> dict[str, Any]:
        scope = req.scope()
        key = req.string("key")
        res = await self.store.delete(
            scope,
            key,
            prev_revision=req.integer("prev_revision"),
            request_id=req.opt_string("request_id"),
            audit=self._audit(req),
        )
        return ok({**res, "status": "deleted"})

    async def op_txn(self, req: Request) -> dict[str, Any]:
        default_scope = req.opt_scope()
        ops = req.doc.get("ops")
        if ops is None:
            raise req.missing("ops")
        if not isinstance(ops, list):
            raise req._bad("ops", "an array of operation objects", ops)
        normalised = []
        for i, raw in enumerate(ops):
            if not isinstance(raw, dict):
                raise Reject(
                    INVALID_ARGUMENT,
                    f"txn: ops[{i}] must be an object, got {json_type(raw)}",
                    field="ops",
                    index=i,
                )
            if "service" in raw:  # the Go wire name of "scope"
                item = dict(raw)
                svc = item.pop("service")
                if item.get("scope", svc) != svc:
                    raise Reject(
                        INVALID_ARGUMENT,
                        f"txn: ops[{i}]: 'service' and 'scope' disagree",
                        field="ops",
                        index=i,
                    )
                item["scope"] = svc
                raw = item
            normalised.append(raw)
        res = await self.store.txn(
            normalised,
            request_id=req.opt_string("request_id"),
            default_scope=default_scope,
            audit=self._audit(req),
        )
        return ok(res)

    async def op_watch(self, req: Request) -> dict[str, Any]:
        """History after ``revision`` (whole revisions, bounded), optionally for one scope.

        ``revision`` in the reply is how far the history was scanned: the caller resumes
        from it (``more`` says another page is ready) and drops bus events at or below it.
        """
        scope = req.opt_scope()
        since, field = self._watch_cursor(req)
        limit = req.limit(self.watch_limit, self.watch_limit)
        # everything up to here is committed; read now (a cached revision may be stale when
        # several daemons share etcd, or 0 for a prefix that never changed)
        head = await self.store.current_revision()
        if since is None:
            return ok(
                {
                    "events": [],
                    "revision": head,
                    "more": False,
                    "next": None,
                    "compact_revision": self.store.compact_revision,
                }
            )
        try:
            events = await self.store.changes_since(since, limit=limit)
        except Compacted as exc:  # a stale cursor (paging contract)
            raise Reject(
                INVALID_ARGUMENT,
                f"watch: field '{field}': {exc.message}",
                field=field,
                reason="compacted",
                compact_revision=exc.extra["compact_revision"],
                oldest_revision=exc.extra["oldest_revision"],
            ) from None
        more = False
        if events:
            # a page ends at a revision boundary: changes_since(limit) guarantees that, and
            # the size cut below keeps it true
            if len(events) >= limit:
                more = True
            out: list[dict[str, Any]] = []
            size = 0
            cut_at: int | None = None
            for i, ev in enumerate(events):
                size += len(_dumps(ev)) + 1
                if size > self.reply_budget and i > 0:
                    cut_at = i
                    break
            if cut_at is not None:
                # drop the partial revision at the cut
                last_rev = events[cut_at]["revision"]
                while cut_at > 0 and events[cut_at - 1]["revision"] == last_rev:
                    cut_at -= 1
                if cut_at == 0:  # one revision larger than the budget: send it whole
                    cut_at = next(
                        (j for j, e in enumerate(events) if e["revision"] != last_rev),
                        len(events),
                    )
                events = events[:cut_at]
                more = True
            scanned = events[-1]["revision"] if more else max(head, events[-1]["revision"])
            out = events if scope is None else [e for e in events if e["scope"] == scope]
        else:
            out, scanned = [], max(head, since)
        return ok(
            {
                "events": out,
                "revision": scanned,
                "more": more,
                "next": scanned if more else None,
                "compact_revision": self.store.compact_revision,
            }
        )

    @staticmethod
    def _watch_cursor(req: Request) -> tuple[int | None, str]:
        """``after`` (the paging name) or ``revision`` (the Go name): where the scan starts."""
        after, rev = req.integer("after"), req.integer("revision")
        if after is not None and rev is not None and after != rev:
            raise Reject(
                INVALID_ARGUMENT,
                f"watch: 'after' ({after}) and 'revision' ({rev}) disagree; send one",
                field="after",
            )
        return (after, "after") if after is not None else (rev, "revision")

    async def op_backup(self, req: Request) -> dict[str, Any]:
        path = req.string("path")
        if not Path(path).is_absolute():
            raise Reject(
                INVALID_ARGUMENT,
                f"backup: path must be absolute (the daemon's working directory is not"
                f" yours), got {path!r}",
                field="path",
            )
        return ok(await self.store.backup(path, overwrite=req.boolean("overwrite")))

    @staticmethod
    def _export_cursor(req: Request) -> tuple[str, str] | None:
        """``after`` of export: the ``next`` object ``{scope, key}`` of the previous page."""
        value = req.doc.get("after")
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or set(value) != {"scope", "key"}
            or not isinstance(value["scope"], str)
            or not isinstance(value["key"], str)
            or not value["scope"]
        ):
            raise req._bad("after", "the 'next' object {scope, key} of the previous page", value)
        return value["scope"], value["key"]

    async def op_export(self, req: Request) -> dict[str, Any]:
        """One page of the export document (``scopes`` holds this page's scopes and keys)."""
        return ok(
            await self.store.export_page(
                after=self._export_cursor(req),
                limit=req.limit(DEFAULT_PAGE, MAX_PAGE),
                max_bytes=self.reply_budget,
            )
        )

    async def _export_stream(self, req: Request) -> AsyncIterator[dict[str, Any]]:
        """Every export page from one read snapshot; an error ends the stream."""
        caller = current_caller()
        try:
            pages = self.store.export_pages(
                after=self._export_cursor(req),
                limit=req.limit(DEFAULT_PAGE, MAX_PAGE),
                max_bytes=self.reply_budget,
            )
            if self.guard is not None:
                self.guard.ensure_fresh()
                await self._authorize(caller, "export", req, None, None, None)
            async for page in pages:
                if self.guard is not None:
                    await self._filter_readable(caller, "export", req, page)
                yield ok(page)
        except Exception as exc:
            yield self._refusal("export", exc)

    async def op_import_(self, req: Request) -> dict[str, Any]:
        doc = req.doc.get("doc")
        if doc is None:
            raise req.missing("doc")
        if not isinstance(doc, dict):
            raise req._bad("doc", "an export object", doc)
        res = await self.store.import_json(
            doc,
            replace=req.boolean("replace"),
            request_id=req.opt_string("request_id"),
            audit=self._audit(req),
        )
        return ok(res)

    async def op_health(self, req: Request) -> dict[str, Any]:
        scope = req.opt_scope()
        store = await self.store.health()
        doc = {
            **store,
            "service": self.service,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": self.requests,
            "rejected": self.rejected,
            "bus": {"published": self.published, "dropped": self.publish_dropped},
        }
        if scope is not None:
            doc["scope"] = scope
            doc["scope_exists"] = await self.store.scope_exists(scope)
        # the status at the top too, for `plant call org.plantd.State health`
        return {**ok(doc), "status": doc["status"]}
