"""The state store on an etcd v3 cluster: the same contract as the SQLite store
(:class:`plantd.state.store.StateStore`), with etcd's revisions as the store's.

Every write is optimistic: read what it depends on (one linearizable read), validate with
the same code as the SQLite store (plantd.state.validation, KeyOp.compare), then commit ONE
etcd txn that compares every key it read (mod/create revision) and writes the change, the
change marker and the request record together; a txn that lost a race to another daemon is
re-read and retried. An etcd failure is ``unavailable`` and nothing is acknowledged.

TTLs are etcd leases (etcd deletes the key; the deletion is published as a ``delete``);
reads hide a key from the moment its ``expires`` passed, as the SQLite store does. History
is etcd's MVCC history: ``changes_since`` is an etcd watch from that revision, compacted to
``history_size`` revisions. See docs/state.md ("etcd backend") for where behaviour differs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fnmatch
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aetcd import rpc

from plantd.protocol import jsoncodec
from plantd.state.batch import KeyState
from plantd.state.errors import (
    Compacted,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    StateError,
    StorageError,
    Unavailable,
)
from plantd.state.etcd import kv
from plantd.state.etcd.conn import EtcdConn, parse_endpoints
from plantd.state.etcd.layout import REV, Layout, decode_value, encode_value, prefix_end, resolve
from plantd.state.history import ChangeFeed, Event, Listener
from plantd.state.ops import CreateScopeOp, DeleteScopeOp, ImportOp, KeyOp, TxnOp
from plantd.state.validation import (
    Limits,
    check_key,
    check_limit,
    check_request_id,
    check_revision,
    check_scope,
    import_scopes,
    new_key_op,
    txn_ops,
)

if TYPE_CHECKING:
    from plantd.state.audit import AuditContext

__all__ = ["EtcdStore"]

log = logging.getLogger("plantd.state.etcd")

#: retries of a write that lost a compare to a concurrent write (another daemon)
MAX_ATTEMPTS = 64
#: etcd's default --max-request-bytes (1.5 MiB); a bigger request is refused by etcd
ETCD_MAX_REQUEST_BYTES = 1536 * 1024


@dataclass
class Plan:
    """What a write commits: compares, ops, and the result (``REV`` = its revision)."""

    result: dict[str, Any]
    compares: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)
    expired: list[tuple[bytes, int]] = field(default_factory=list)  # (key, mod) to delete first
    write: bool = True
    deleted_at: int | None = None  # index of the op whose deleted count is "deleted_keys"


class EtcdStore:
    """Async scoped key-value store on etcd; create with ``await EtcdStore.open(...)``.

    The writes take ``audit`` for the backend interface but keep no audit rows: etcd's
    transaction cannot hold them, so the state service records etcd writes in the keyring's
    audit file after the write (``audits_in_transaction`` is False)."""

    backend = "etcd"
    audits_in_transaction = False

    def __init__(
        self,
        conn: EtcdConn,
        layout: Layout,
        limits: Limits,
        *,
        history_size: int,
        request_ttl: int,
        max_txn_ops: int,
        probe_interval: float,
        publisher_ttl: int,
        clock: Callable[[], float],
    ) -> None:
        self.conn = conn
        self.layout = layout
        self.limits = limits
        self._history_size = history_size
        self._request_ttl = request_ttl
        self._max_txn_ops = max_txn_ops
        self._probe_interval = probe_interval
        self._publisher_ttl = publisher_ttl
        self._clock = clock
        self._feed = ChangeFeed()
        self._tasks: list[asyncio.Task[None]] = []
        self._request_lease: tuple[int, float] | None = None
        self._closed = False
        self.revision = 0
        self.compact_revision = 0
        self.commits = 0
        self.ops_applied = 0
        self.queue_depth = 0
        self.publisher: Any = None

    @classmethod
    async def open(
        cls,
        endpoints: str,
        *,
        prefix: str = "/plantd/state/",
        limits: Limits | None = None,
        history_size: int = 10_000,
        request_ttl: int = 86_400,
        max_txn_ops: int = 128,
        timeout: float = 3.0,
        probe_interval: float = 1.0,
        publisher_ttl: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> EtcdStore:
        """Connect (lazily: a cluster that is down now is reported by health, and the store
        serves as soon as it is back)."""
        if not prefix.endswith("/"):
            raise InvalidArgument(f"etcd_prefix must end with '/', got {prefix!r}")
        conn = EtcdConn(parse_endpoints(endpoints), timeout)
        self = cls(
            conn,
            Layout(prefix),
            limits or Limits(),
            history_size=history_size,
            request_ttl=request_ttl,
            max_txn_ops=max_txn_ops,
            probe_interval=probe_interval,
            publisher_ttl=publisher_ttl,
            clock=clock,
        )
        with contextlib.suppress(StateError):
            await self._probe()
        self._tasks.append(asyncio.create_task(self._monitor(), name="state-etcd-probe"))
        return self

    @property
    def last_error(self) -> str | None:
        return self.conn.last_error

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.publisher is not None:
            await self.publisher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.conn.close()

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ change feed

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` for every change, in revision order, while this daemon
        holds the publisher role (one daemon of those on this etcd prefix at a time; see
        plantd.state.etcd.publisher)."""
        from plantd.state.etcd.publisher import PublisherRole

        self._feed.add(callback)
        if self.publisher is None:
            self.publisher = PublisherRole(self, self._feed, ttl=self._publisher_ttl)
            self._tasks.append(asyncio.create_task(self.publisher.run(), name="state-publisher"))

    def remove_listener(self, callback: Listener) -> None:
        self._feed.remove(callback)

    # ------------------------------------------------------------------ health

    async def _probe(self) -> int:
        """Read the change marker (a linearizable read: needs a quorum); the head revision."""
        rev = await self.head()
        self._maybe_compact_later()
        return rev

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            with contextlib.suppress(StateError):
                await self._probe()

    async def head(self) -> int:
        """The revision of the newest change (the change marker's mod_revision)."""
        r = await kv.txn(self.conn, (), [kv.get(self.layout.head)])
        kvs = r.responses[0].response_range.kvs
        rev = int(kvs[0].mod_revision) if kvs else 0
        self.revision = max(self.revision, rev)
        return rev

    async def current_revision(self) -> int:
        """etcd's revision now (a linearizable read), not the change marker's: a prefix that
        never changed has no marker (head 0), and one whose last change is old may lie below
        a compaction other prefixes of the cluster caused; either way a watch from the
        marker's revision would be refused as compacted. No change of this store lies between
        the marker and etcd's revision, so a watch may start there."""
        r = await kv.txn(self.conn, (), [kv.get(self.layout.head)])
        kvs = r.responses[0].response_range.kvs
        self.revision = max(self.revision, int(kvs[0].mod_revision) if kvs else 0)
        return max(int(r.header.revision), self.revision)

    def status(self) -> tuple[str, str | None]:
        """``("fail", reason)`` while etcd is unreachable or without quorum."""
        if self.conn.last_error:
            return "fail", self.conn.last_error
        return "pass", None

    async def health(self) -> dict[str, Any]:
        """Liveness and storage facts for the health operation and the metrics endpoint."""
        doc: dict[str, Any] = {
            "status": "pass",
            "backend": "etcd",
            "endpoints": self.conn.endpoints,
            "endpoint": self.conn.endpoint,
            "prefix": self.layout.prefix.decode(),
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "oldest_revision": self.compact_revision + 1,
            "commits": self.commits,
            "ops_applied": self.ops_applied,
            "queue_depth": 0,
            "publisher": self.publisher is not None and self.publisher.leading,
            "limits": asdict(self.limits),
            "last_error": None,
        }
        try:
            st = await self.conn.call("Maintenance", "Status", rpc.StatusRequest())
            doc["etcd"] = {
                "version": st.version,
                "db_size": st.dbSize,
                "leader": f"{st.leader:x}",
                "member": f"{st.header.member_id:x}",
                "raft_term": st.raftTerm,
            }
            _rev, (scopes, keys) = await kv.read_many(
                self.conn,
                [
                    kv.scan(self.layout.scopes, prefix_end(self.layout.scopes), count_only=True),
                    kv.scan(self.layout.keys, prefix_end(self.layout.keys), count_only=True),
                ],
                self._max_txn_ops,
            )
            doc.update(scopes=scopes.count, keys=keys.count, revision=await self.head())
        except StateError as e:
            doc.update(status="fail", last_error=e.message, scopes=None, keys=None)
        return doc

    # ------------------------------------------------------------------ writes

    def _rid(self, request_id: Any) -> str | None:
        return check_request_id(request_id, self.limits)

    async def create_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]:
        """Create a scope; creating an existing scope is not an error (``created: false``)."""
        op = CreateScopeOp(check_scope(scope, self.limits), self._rid(request_id))
        key = self.layout.scope(op.scope)

        def plan(found: list[Any], rev: int, now: float) -> Plan:
            if found[0] is not None:
                crev = int(found[0].create_revision)
                res = {"scope": op.scope, "created": False, "revision": rev}
                return Plan({**res, "create_revision": crev}, write=False)
            return Plan(
                {"scope": op.scope, "created": True, "revision": REV, "create_revision": REV},
                [kv.cmp_create(key, 0)],
                [kv.put(key, _scope_value(now))],
            )

        return await self._write(op.request_id, op.fingerprint, [key], plan)

    async def delete_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]:
        """Delete a scope and all its keys: ONE revision, ONE ``delete-scope`` event."""
        op = DeleteScopeOp(check_scope(scope, self.limits), self._rid(request_id))
        key = self.layout.scope(op.scope)

        def plan(found: list[Any], rev: int, now: float) -> Plan:
            if found[0] is None:
                raise NotFound(f"scope {op.scope!r} not found", scope=op.scope)
            return Plan(
                {"scope": op.scope, "revision": REV, "deleted_keys": 0},
                [kv.cmp_create(key, int(found[0].create_revision))],
                [kv.delete(key), kv.delete(self.layout.scope_keys(op.scope), prefix=True)],
                deleted_at=1,
            )

        return await self._write(op.request_id, op.fingerprint, [key], plan)

    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        prev_revision: int | None = None,
        if_absent: bool = False,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Set a JSON value (creating the scope if missing); optional CAS and TTL."""
        kop = new_key_op(
            self.limits, "set", scope, key, prev_revision, if_absent, True, value, ttl, "set"
        )
        return await self._key_ops([kop], self._rid(request_id), single=True)

    async def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Delete a key; a missing key raises NotFound; optional CAS on mod_revision."""
        kop = new_key_op(
            self.limits, "delete", scope, key, prev_revision, False, False, None, None, "delete"
        )
        return await self._key_ops([kop], self._rid(request_id), single=True)

    async def txn(
        self,
        ops: Iterable[dict[str, Any]],
        *,
        request_id: str | None = None,
        audit: AuditContext | None = None,
        default_scope: str | None = None,
    ) -> dict[str, Any]:
        """Apply set/delete/check ops atomically as ONE etcd txn = ONE revision."""
        kops = txn_ops(ops, self.limits, default_scope)
        return await self._key_ops(kops, self._rid(request_id), single=False)

    async def _key_ops(self, kops: list[KeyOp], rid: str | None, single: bool) -> dict[str, Any]:
        op = TxnOp(kops, rid, single)
        scopes = list(dict.fromkeys(o.scope for o in kops))
        reads = [self.layout.scope(s) for s in scopes] + [
            self.layout.key(o.scope, o.key) for o in kops
        ]
        leases: dict[int, int] = {}
        for i, o in enumerate(kops):
            if o.op == "set" and o.ttl is not None:
                leases[i] = await self._grant(math.ceil(o.ttl))

        def plan(found: list[Any], rev: int, now: float) -> Plan:
            scope_kvs = dict(zip(scopes, found[: len(scopes)], strict=True))
            states: list[KeyState] = []
            expired: list[tuple[bytes, int]] = []
            for o, item in zip(kops, found[len(scopes) :], strict=True):
                st = _key_state(scope_kvs[o.scope] is not None, item, now)
                if st.expired and o.op != "check":
                    expired.append((self.layout.key(o.scope, o.key), int(item.mod_revision)))
                states.append(st)
            for i, (o, st) in enumerate(zip(kops, states, strict=True)):
                o.compare(st, None if single else i)
            if expired:
                return Plan({}, expired=expired)
            if all(o.op == "check" for o in kops):
                checked = [
                    {"scope": o.scope, "key": o.key, "mod_revision": st.mod_revision}
                    for o, st in zip(kops, states, strict=True)
                ]
                return Plan({"revision": rev, "results": checked}, write=False)
            p = Plan({})
            for s, skv in scope_kvs.items():
                skey = self.layout.scope(s)
                screv = int(skv.create_revision) if skv is not None else 0
                p.compares.append(kv.cmp_create(skey, screv))
                if skv is None and any(o.scope == s and o.op == "set" for o in kops):
                    p.ops.append(kv.put(skey, _scope_value(now)))
            results: list[dict[str, Any]] = []
            for i, (o, st) in enumerate(zip(kops, states, strict=True)):
                k = self.layout.key(o.scope, o.key)
                p.compares.append(kv.cmp_mod(k, st.mod_revision))
                where = {"scope": o.scope, "key": o.key}
                if o.op == "set":
                    assert o.text is not None
                    expires = None if o.ttl is None else now + o.ttl
                    p.ops.append(kv.put(k, encode_value(o.text, now, expires), leases.get(i, 0)))
                    crev: int | str = st.row[0] if st.row else REV
                    version = st.row[2] + 1 if st.row else 1
                    results.append(
                        {
                            **where,
                            "revision": REV,
                            "create_revision": crev,
                            "mod_revision": REV,
                            "version": version,
                        }
                    )
                elif o.op == "delete":
                    p.ops.append(kv.delete(k))
                    results.append({**where, "revision": REV, "prev_mod_revision": st.mod_revision})
                else:
                    results.append({**where, "mod_revision": st.mod_revision})
            p.result = results[0] if single else {"revision": REV, "results": results}
            return p

        return await self._write(rid, op.fingerprint, reads, plan, writes=len(kops))

    async def import_json(
        self,
        doc: dict[str, Any],
        *,
        replace: bool = False,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Load an export document as ONE etcd txn; ``replace`` drops the other scopes and
        keys (deletes only what the document does not overwrite: etcd refuses a txn that
        deletes and puts one key)."""
        scopes = import_scopes(doc, self.limits)
        op = ImportOp(scopes, replace, self._rid(request_id))
        lay = self.layout
        keys = sum(len(v) for v in scopes.values())

        async def extra() -> list[Any]:
            ops = [kv.scan(lay.scopes, prefix_end(lay.scopes), keys_only=True)]
            if replace:
                ops.append(kv.scan(lay.keys, prefix_end(lay.keys), keys_only=True))
            return (await kv.read_many(self.conn, ops, self._max_txn_ops))[1]

        def plan(found: list[Any], rev: int, now: float, listed: list[Any]) -> Plan:
            head = found[0]
            p = Plan(
                {"revision": REV, "scopes": len(scopes), "keys": keys},
                [kv.cmp_mod(lay.head, int(head.mod_revision) if head is not None else 0)],
            )
            existing = {lay.scope_name(x.key) for x in listed[0].kvs}
            if replace:
                for s in sorted(existing - set(scopes)):
                    p.ops += [kv.delete(lay.scope(s)), kv.delete(lay.scope_keys(s), prefix=True)]
                stored = [x.key for x in listed[1].kvs]  # sorted by etcd
                for s, items in scopes.items():
                    keep = sorted(lay.key(s, item[0]) for item in items)
                    start = lay.scope_keys(s)
                    p.ops += [kv.delete_range(a, b) for a, b in _gaps(stored, keep, start)]
            for s, items in scopes.items():
                if s not in existing:
                    p.ops.append(kv.put(lay.scope(s), _scope_value(now)))
                for k, text, _value in items:
                    p.ops.append(kv.put(lay.key(s, k), encode_value(text, now, None)))
            return p

        return await self._write(
            op.request_id, op.fingerprint, [lay.head], plan, writes=keys, extra=extra
        )

    async def _write(
        self,
        rid: str | None,
        fingerprint: Callable[[], str],
        reads: list[bytes],
        plan: Callable[..., Plan],
        *,
        writes: int = 1,
        extra: Callable[[], Awaitable[list[Any]]] | None = None,
    ) -> dict[str, Any]:
        """Read ``reads`` (and the request record), plan, commit as ONE txn; retried while
        a concurrent write changed what was read."""
        if self._closed:
            raise StorageError("state store is closed")
        fp = fingerprint() if rid is not None else ""
        rkey = self.layout.request(rid) if rid is not None else b""
        for _attempt in range(MAX_ATTEMPTS):
            now = self._clock()
            ops = [kv.get(k) for k in reads] + ([kv.get(rkey)] if rid is not None else [])
            rev, ranges = await kv.read_many(self.conn, ops, self._max_txn_ops)
            found = [r.kvs[0] if r.kvs else None for r in ranges]
            if rid is not None:
                record = found.pop()
                if record is not None:
                    return _replay(record, rid, fp)
            try:
                p = plan(found, rev, now, await extra()) if extra else plan(found, rev, now)
            except StorageError:
                raise
            except StateError as err:
                if rid is not None and not await self._record(rkey, fp, {"error": err.to_dict()}):
                    continue  # the id was used meanwhile: replay it
                raise
            if p.expired:
                await self._expire(p.expired, now)
                continue
            if not p.write:
                return p.result
            compares = list(p.compares)
            ops = [*p.ops, kv.put(self.layout.head, _marker(now))]
            if rid is not None:
                compares.append(kv.cmp_version(rkey, 0))
                stored = jsoncodec.dumps({"fp": fp, "result": p.result})
                ops.append(kv.put(rkey, stored, await self._requests_lease()))
            self._check_size(compares, ops)
            r = await kv.txn(self.conn, compares, ops)
            if not r.succeeded:
                continue  # another write got in between: read again
            rev = int(r.header.revision)
            self._adopt(rev, writes)
            result = resolve(p.result, rev)
            if p.deleted_at is not None:
                result["deleted_keys"] = int(
                    r.responses[p.deleted_at].response_delete_range.deleted
                )
            return dict(result)
        raise Unavailable(
            f"gave up after {MAX_ATTEMPTS} attempts: concurrent writes kept changing the keys"
            " read; nothing was applied, retry",
            reason="contention",
        )

    def _check_size(self, compares: list[Any], ops: list[Any]) -> None:
        n = len(ops)
        if n > self._max_txn_ops or len(compares) > self._max_txn_ops:
            raise LimitExceeded(
                "etcd_max_txn_ops",
                self._max_txn_ops,
                max(n, len(compares)),
                "write needs this many etcd txn operations (keys + scopes + change marker +"
                " request record); raise etcd's --max-txn-ops and PLANTD_STATE_ETCD_MAX_TXN_OPS"
                " or send fewer ops; etcd_max_txn_ops",
            )
        size = sum(op.ByteSize() for op in ops) + sum(c.ByteSize() for c in compares)
        if size > ETCD_MAX_REQUEST_BYTES:
            raise LimitExceeded(
                "etcd_max_request_bytes", ETCD_MAX_REQUEST_BYTES, size, "write request bytes"
            )

    def _adopt(self, rev: int, writes: int) -> None:
        self.revision = max(self.revision, rev)
        self.commits += 1
        self.ops_applied += writes
        self._maybe_compact_later()

    def _maybe_compact_later(self) -> None:
        keep = self._history_size
        if keep <= 0:
            return
        target = self.revision - keep
        if target - self.compact_revision >= max(1, keep // 10):
            self.compact_revision = target
            self._tasks.append(asyncio.create_task(self._compact(target)))

    async def _compact(self, revision: int) -> None:
        try:
            await self.conn.call("KV", "Compact", rpc.CompactionRequest(revision=revision))
        except StateError as e:
            if "compacted" not in e.message:
                log.warning("etcd compaction to %d failed: %s", revision, e.message)

    async def _record(self, rkey: bytes, fp: str, outcome: dict[str, Any]) -> bool:
        """Store a failed request's outcome (no change, so its own small txn)."""
        value = jsoncodec.dumps({"fp": fp, **outcome})
        lease = await self._requests_lease()
        r = await kv.txn(self.conn, [kv.cmp_version(rkey, 0)], [kv.put(rkey, value, lease)])
        return bool(r.succeeded)

    async def _expire(self, keys: list[tuple[bytes, int]], now: float) -> None:
        """Delete keys whose TTL passed before a write touches them: each its own revision
        (a ``delete`` event), as the SQLite store does."""
        for key, mod in keys:
            await kv.txn(
                self.conn,
                [kv.cmp_mod(key, mod)],
                [kv.delete(key), kv.put(self.layout.head, _marker(now))],
            )

    async def _grant(self, ttl: int) -> int:
        r = await self.conn.call("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=max(ttl, 1)))
        return int(r.ID)

    async def _requests_lease(self) -> int:
        """A lease shared by the request records of an hour (each kept ~request_ttl)."""
        now = time.monotonic()
        if self._request_lease is None or now - self._request_lease[1] > 3600:
            self._request_lease = (await self._grant(self._request_ttl + 3600), now)
        return self._request_lease[0]

    # ------------------------------------------------------------------ reads

    async def get(self, scope: str, key: str) -> dict[str, Any]:
        """Return value and metadata of a live key; missing scope or key raises NotFound."""
        check_scope(scope, self.limits)
        check_key(key, self.limits)
        now = self._clock()
        rev, (s, k) = await kv.read_many(
            self.conn,
            [
                kv.get(self.layout.scope(scope), count_only=True),
                kv.get(self.layout.key(scope, key)),
            ],
            self._max_txn_ops,
        )
        if not s.count:
            raise NotFound(f"scope {scope!r} not found", scope=scope, key=key)
        item = _live(k.kvs[0] if k.kvs else None, now)
        if item is None:
            raise NotFound(f"key {key!r} not found in scope {scope!r}", scope=scope, key=key)
        text, updated, expires = item
        x = k.kvs[0]
        return {
            "scope": scope,
            "key": key,
            "value": jsoncodec.loads(text),
            "create_revision": int(x.create_revision),
            "mod_revision": int(x.mod_revision),
            "version": int(x.version),
            "updated": updated,
            "expires": expires,
            "revision": rev,
        }

    async def scope_exists(self, scope: str) -> bool:
        check_scope(scope, self.limits)
        r = await kv.txn(self.conn, (), [kv.get(self.layout.scope(scope), count_only=True)])
        return bool(r.responses[0].response_range.count)

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of scope names: ``{details: [{scope, create_revision, keys}], more,
        next, total, revision}`` (``keys`` counts stored keys, expired ones not yet
        deleted by etcd included)."""
        lay = self.layout
        start = lay.scope(prefix) if prefix else lay.scopes
        end = prefix_end(start)
        first = (
            lay.scope(after) + b"\x00" if after is not None and lay.scope(after) >= start else start
        )
        rev, (page, total) = await kv.read_many(
            self.conn,
            [
                kv.scan(first, end, limit=limit + 1, keys_only=True),
                kv.scan(start, end, count_only=True),
            ],
            self._max_txn_ops,
        )
        rows = list(page.kvs)[:limit]
        names = [lay.scope_name(x.key) for x in rows]
        counts = (
            await kv.read_many(
                self.conn,
                [
                    kv.scan(
                        lay.scope_keys(n),
                        prefix_end(lay.scope_keys(n)),
                        count_only=True,
                        revision=rev,
                    )
                    for n in names
                ],
                self._max_txn_ops,
            )
            if names
            else (rev, [])
        )
        details = [
            {"scope": n, "create_revision": int(x.create_revision), "keys": int(c.count)}
            for n, x, c in zip(names, rows, counts[1], strict=True)
        ]
        more = len(page.kvs) > limit
        return {
            "details": details,
            "more": more,
            "next": names[-1] if more else None,
            "total": int(total.count),
            "revision": rev,
        }

    async def list_scopes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.list_scopes_page(after=after, limit=1000)
            out += page["details"]
            if not page["more"]:
                return out
            after = page["next"]

    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str | None = None,
        after: str | None = None,
        limit: int = 1000,
        include_values: bool = True,
        max_bytes: int = 768 * 1024,
    ) -> dict[str, Any]:
        """One page of a scope's live keys: ``{keys, more, next, revision, total}`` (one
        etcd snapshot); NotFound if no such scope."""
        check_scope(scope, self.limits)
        lay = self.layout
        base = lay.scope_keys(scope)
        start = base + prefix.encode()
        end = prefix_end(start)
        cursor = base + after.encode() + b"\x00" if after is not None else start
        cursor = max(cursor, start)
        now = self._clock()
        rev, (exists, total) = await kv.read_many(
            self.conn,
            [kv.get(lay.scope(scope), count_only=True), kv.scan(start, end, count_only=True)],
            self._max_txn_ops,
        )
        if not exists.count:
            raise NotFound(f"scope {scope!r} not found", scope=scope)
        items: list[dict[str, Any]] = []
        size = 0
        more = False
        while True:
            r = await kv.txn(
                self.conn,
                (),
                [kv.scan(cursor, end, limit=limit + 1, revision=rev)],
            )
            chunk = r.responses[0].response_range
            for x in chunk.kvs:
                cursor = bytes(x.key) + b"\x00"
                key = lay.split_key(x.key)[1]
                live = _live(x, now)
                if live is None or (glob is not None and not fnmatch.fnmatchcase(key, glob)):
                    continue
                if len(items) == limit:
                    more = True
                    break
                text, updated, expires = live
                # UTF-8 bytes as stored (the text, its metadata), as SQLite counts them
                size += len(x.key) + (len(x.value) if include_values else 0) + 140
                if items and size > max_bytes:
                    more = True
                    break
                item: dict[str, Any] = {
                    "key": key,
                    "create_revision": int(x.create_revision),
                    "mod_revision": int(x.mod_revision),
                    "version": int(x.version),
                    "updated": updated,
                    "expires": expires,
                }
                if include_values:
                    item["value"] = jsoncodec.loads(text)
                items.append(item)
            if more or not chunk.more:
                break
        return {
            "keys": items,
            "more": more,
            "next": items[-1]["key"] if more else None,
            "revision": rev,
            "total": None if glob is not None else int(total.count),
        }

    async def list_keys(
        self, scope: str, *, prefix: str = "", include_values: bool = False
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.list_keys_page(
                scope, prefix=prefix, after=after, include_values=include_values
            )
            out += page["keys"]
            if not page["more"]:
                return out
            after = page["next"]

    async def export_page(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
        revision: int = 0,
    ) -> dict[str, Any]:
        """One page of an export at one revision (``revision``: that snapshot, 0 = now)."""
        lay = self.layout
        s0, k0 = after or ("", "")
        now = self._clock()
        kstart = lay.key(s0, k0) + b"\x00" if after else lay.keys
        sstart = lay.scope(s0) + b"\x00" if after else lay.scopes
        rev, (keys, scopes) = await kv.read_many(
            self.conn,
            [
                kv.scan(kstart, prefix_end(lay.keys), limit=limit + 1, revision=revision),
                kv.scan(
                    sstart,
                    prefix_end(lay.scopes),
                    limit=limit + 1,
                    keys_only=True,
                    revision=revision,
                ),
            ],
            self._max_txn_ops,
        )
        rev = revision or rev
        more = len(keys.kvs) > limit
        kept: list[tuple[str, str, str | None]] = []  # None: expired, not exported
        size = 0
        for x in list(keys.kvs)[:limit]:
            size += len(x.key) + len(x.value) + 8
            if kept and size > max_bytes:
                more = True
                break
            live = _live(x, now)
            kept.append((*lay.split_key(x.key), live[0] if live else None))
        upper = kept[-1][0] if more and kept else None
        names = [lay.scope_name(x.key) for x in scopes.kvs]
        names = [n for n in names if upper is None or n <= upper]
        if len(names) > limit:  # a run of empty scopes: the page ends at the limit-th scope
            names = names[:limit]
            more = True
            kept = [r for r in kept if r[0] <= names[-1]]
        out: dict[str, dict[str, Any]] = {}
        if kept and kept[0][0] == s0:
            out[s0] = {}  # the cursor's scope continues in this page
        for n in names:
            out[n] = {}
        for s, k, text in kept:
            if text is not None:
                out.setdefault(s, {})[k] = jsoncodec.loads(text)
        cursor: tuple[str, str] | None = None
        if more:
            last_scope = max(kept[-1][0] if kept else "", names[-1] if names else "")
            last_key = kept[-1][1] if kept and kept[-1][0] == last_scope else ""
            cursor = (last_scope, last_key)
        return {
            "format": "plantd-state",
            "version": 1,
            "revision": rev,
            "scopes": out,
            "count": sum(1 for r in kept if r[2] is not None),
            "more": cursor is not None,
            "next": {"scope": cursor[0], "key": cursor[1]} if cursor else None,
        }

    async def export_pages(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of an export at ONE revision (etcd's MVCC snapshot of the first page)."""
        rev = 0
        cursor = after
        while True:
            page = await self.export_page(
                after=cursor, limit=limit, max_bytes=max_bytes, revision=rev
            )
            rev = page["revision"]
            yield page
            if not page["more"]:
                return
            cursor = (page["next"]["scope"], page["next"]["key"])

    async def export_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": "plantd-state", "version": 1, "scopes": {}}
        async for page in self.export_pages():
            doc["revision"] = page["revision"]
            for s, items in page["scopes"].items():
                doc["scopes"].setdefault(s, {}).update(items)
        return doc

    async def changes_since(self, revision: int, *, limit: int | None = None) -> list[Event]:
        """Committed events with revision > ``revision`` in revision order (an etcd watch
        from there up to the newest change); Compacted if etcd compacted them away."""
        if check_revision(revision, "revision") is None:
            raise InvalidArgument("revision is required")
        check_limit(limit)
        if revision < self.compact_revision:
            raise self._compacted(revision, self.compact_revision)
        head = await self.head()
        if head <= revision:
            return []
        from plantd.state.etcd.publisher import watch_changes

        out: list[Event] = []
        try:
            async for rev, events in watch_changes(self, revision):
                out += events
                if rev >= head or (limit is not None and len(out) >= limit):
                    break
        except Compacted as exc:
            self.compact_revision = max(self.compact_revision, exc.compact_revision)
            raise self._compacted(revision, exc.compact_revision) from None
        return out

    @staticmethod
    def _compacted(revision: int, compact: int) -> Compacted:
        return Compacted(
            f"revision {revision} is compacted: history starts after revision {compact};"
            " resync with a full read",
            compact_revision=compact,
        )

    # ------------------------------------------------------------------ backup

    async def backup(
        self, dest: str | os.PathLike[str], *, overwrite: bool = False
    ) -> dict[str, Any]:
        """An etcd snapshot of the member in use (``etcdctl snapshot restore`` restores it;
        it holds the whole etcd keyspace, not only plantd's prefix)."""
        path = Path(dest)
        await asyncio.to_thread(_check_dest, path, overwrite)
        tmp = path.with_name(path.name + ".partial")
        size = 0
        try:
            call = self.conn.stub("Maintenance").Snapshot(
                rpc.SnapshotRequest(), timeout=max(self.conn.timeout, 60.0)
            )
            with tmp.open("wb") as fh:
                async for chunk in call:
                    fh.write(chunk.blob)
                    size += len(chunk.blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except rpc.AioRpcError as exc:
            tmp.unlink(missing_ok=True)
            raise self.conn.failure(exc, self.conn.endpoint, "snapshot") from None
        return {
            "path": str(path),
            "bytes": size,
            "format": "etcd-snapshot",
            "revision": self.revision,
        }


def _gaps(stored: list[bytes], keep: list[bytes], prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Ranges ``[a, b)`` under ``prefix`` that cover every stored key not in ``keep`` and no
    key of ``keep`` (both sorted): an import with ``replace`` deletes what it does not
    overwrite in at most ``len(keep) + 1`` ops, however many keys that is (etcd refuses a
    txn that deletes and puts one key, so the kept keys must stay outside every range)."""
    lo, hi = bisect.bisect_left(stored, prefix), bisect.bisect_left(stored, prefix_end(prefix))
    kept = set(keep)
    ranges: dict[int, tuple[bytes, bytes]] = {}
    for x in stored[lo:hi]:
        if x in kept:
            continue
        i = bisect.bisect_left(keep, x)  # keep[i-1] < x < keep[i]
        a = keep[i - 1] + b"\x00" if i else prefix
        ranges[i] = (a, keep[i] if i < len(keep) else prefix_end(prefix))
    return [ranges[i] for i in sorted(ranges)]


def _check_dest(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InvalidArgument(f"backup: {path} exists (overwrite to replace it)", field="path")
    if not path.parent.is_dir():
        raise InvalidArgument(f"backup: no such directory {path.parent}", field="path")


def _key_state(scope_exists: bool, item: Any, now: float) -> KeyState:
    if item is None:
        return KeyState(scope_exists, None, False)
    _text, _u, expires = decode_value(item.value)
    if expires is not None and expires <= now:
        return KeyState(scope_exists, None, True)
    row = (int(item.create_revision), int(item.mod_revision), int(item.version))
    return KeyState(scope_exists, row, False)


def _live(item: Any, now: float) -> tuple[str, float, float | None] | None:
    """``(text, updated, expires)`` of a stored key unless its TTL passed."""
    if item is None:
        return None
    text, updated, expires = decode_value(item.value)
    if expires is not None and expires <= now:
        return None
    return text, updated, expires


def _scope_value(now: float) -> bytes:
    return jsoncodec.dumps({"created": now})


def _marker(now: float) -> bytes:
    return jsoncodec.dumps({"ts": now})


def _replay(record: Any, rid: str, fp: str) -> dict[str, Any]:
    doc = jsoncodec.loads(record.value)
    if doc["fp"] != fp:
        raise InvalidArgument(
            f"request_id {rid!r} was already used for a different request", request_id=rid
        )
    if "error" in doc:
        raise StateError.from_dict(doc["error"])
    result: dict[str, Any] = resolve(doc["result"], int(record.mod_revision))
    return result
