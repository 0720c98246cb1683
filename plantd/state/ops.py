"""The write operations: each validates (reads) before it writes, inside a :class:`Batch`.

An op raises a StateError only before writing, so a failing compare or a missing key never
touches the database and never fails the other operations of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plantd.state.batch import (
    DELETE_KEY_SQL,
    UPSERT_JSON_SQL,
    UPSERT_SQL,
    Batch,
    KeyState,
    Op,
    write_rows,
)
from plantd.state.errors import Conflict, NotFound
from plantd.state.requestlog import CANONICAL, fingerprint

__all__ = ["CreateScopeOp", "DeleteScopeOp", "ImportOp", "KeyOp", "TxnOp"]


@dataclass
class KeyOp:
    """One set/delete/check of a txn (or a standalone set/delete)."""

    op: str  # set | delete | check
    scope: str
    key: str
    text: str | None = None
    value: Any = None
    ttl: float | None = None
    prev_revision: int | None = None  # 0 = must not exist

    def compare(self, st: KeyState, index: int | None) -> None:
        cur = st.mod_revision
        prev = self.prev_revision
        if (prev is None or prev == cur) and (self.op != "delete" or st.row is not None):
            return  # the common case: no error message to build
        where = f"{self.scope}/{self.key}" + (f" (txn op {index})" if index is not None else "")
        extra: dict[str, Any] = {"scope": self.scope, "key": self.key}
        if index is not None:
            extra["index"] = index
        if prev is not None and prev != cur:
            if prev == 0:
                msg = f"compare failed for {where}: key must not exist, it has mod_revision {cur}"
            elif cur == 0:
                msg = (
                    f"compare failed for {where}: expected mod_revision {prev}, key does not exist"
                )
            else:
                msg = f"compare failed for {where}: expected mod_revision {prev}, current is {cur}"
            raise Conflict(msg, current_revision=cur, **extra)
        what = "key" if st.scope_exists else "scope"
        name = f"{self.key!r} in scope {self.scope!r}" if st.scope_exists else repr(self.scope)
        raise NotFound(f"cannot delete {where}: {what} {name} not found", **extra)

    def describe(self) -> list[Any]:
        text = CANONICAL.encode(self.value) if self.op == "set" else None
        return [self.op, self.scope, self.key, text, self.ttl, self.prev_revision]


class TxnOp(Op):
    """Standalone set/delete (``single``) or an atomic txn: all compares pass or nothing."""

    def __init__(self, ops: list[KeyOp], request_id: str | None, single: bool) -> None:
        self.ops = ops
        self.request_id = request_id
        self.single = single

    def fingerprint(self) -> str:
        return fingerprint("txn" if not self.single else "op", [o.describe() for o in self.ops])

    def apply(self, b: Batch) -> dict[str, Any]:
        ops = self.ops
        states = b.lookup_many(ops, values=self.audit is not None)
        for i, (o, st) in enumerate(zip(ops, states, strict=True)):
            o.compare(st, None if self.single else i)
        if all(o.op == "check" for o in ops):
            # compare-only txn: nothing changes, no new revision
            checked = [
                {"scope": o.scope, "key": o.key, "mod_revision": st.mod_revision}
                for o, st in zip(ops, states, strict=True)
            ]
            return {"revision": b.revision, "results": checked}
        for o, st in zip(ops, states, strict=True):
            if st.expired and o.op != "check":
                b.expire(o.scope, o.key)
        rev = b.begin_change()
        now = b.now
        results: list[dict[str, Any]] = []
        scopes_made: set[str] = set()
        puts: list[tuple[Any, ...]] = []
        any_ttl = False
        dels: list[tuple[str, str]] = []
        # a key appears once per txn, so its rows can be written together after the loop
        for o, st in zip(ops, states, strict=True):
            scope, key = o.scope, o.key
            if o.op == "set":
                if not st.scope_exists and scope not in scopes_made:
                    b.create_scope(rev, scope)
                    scopes_made.add(scope)
                crev, version = (st.row[0], st.row[2] + 1) if st.row else (rev, 1)
                if st.row is None:  # an expired row was deleted just above
                    b.count(scope, 1)
                if o.ttl is None:
                    expires = None
                else:
                    expires = now + o.ttl
                    any_ttl = True
                puts.append((scope, key, o.text, crev, rev, version, now, expires))
                b.emit(rev, "set", scope, key, o.text, o.value)
                results.append(
                    {
                        "scope": scope,
                        "key": key,
                        "revision": rev,
                        "create_revision": crev,
                        "mod_revision": rev,
                        "version": version,
                    }
                )
            elif o.op == "delete":
                dels.append((scope, key))
                b.count(scope, -1)
                b.emit(rev, "delete", scope, key, None, None)
                results.append(
                    {
                        "scope": scope,
                        "key": key,
                        "revision": rev,
                        "prev_mod_revision": st.mod_revision,
                    }
                )
            else:
                results.append({"scope": scope, "key": key, "mod_revision": st.mod_revision})
        if puts:
            # the JSON statement stores updated=now, expires=NULL: TTL rows go row by row
            write_rows(
                b.db,
                b.json_each and not any_ttl,
                puts,
                2,
                now,
                UPSERT_SQL,
                UPSERT_JSON_SQL,
            )
        if dels:
            b.db.executemany(DELETE_KEY_SQL, dels)
        if self.audit is not None:
            for o, st in zip(ops, states, strict=True):
                if o.op != "check":
                    b.audit(self.audit.entry(o.scope, o.key, st.old_value, o.value, rev))
        if self.single:
            return results[0]
        return {"revision": rev, "results": results}


class CreateScopeOp(Op):
    def __init__(self, scope: str, request_id: str | None) -> None:
        self.scope = scope
        self.request_id = request_id

    def fingerprint(self) -> str:
        return fingerprint("create-scope", self.scope)

    def apply(self, b: Batch) -> dict[str, Any]:
        found = b.db.execute(
            "SELECT create_revision FROM scopes WHERE name=?", (self.scope,)
        ).fetchone()
        if found:
            rev, crev = b.revision, found[0]
        else:
            rev = crev = b.begin_change()
            b.create_scope(rev, self.scope)
        if self.audit is not None:
            status = "created" if not found else "exists"
            summary = {"created": not found, "status": status}
            b.audit(self.audit.entry(self.scope, None, None, summary, rev))
        return {
            "scope": self.scope,
            "created": not found,
            "revision": rev,
            "create_revision": crev,
        }


class DeleteScopeOp(Op):
    def __init__(self, scope: str, request_id: str | None) -> None:
        self.scope = scope
        self.request_id = request_id

    def fingerprint(self) -> str:
        return fingerprint("delete-scope", self.scope)

    def apply(self, b: Batch) -> dict[str, Any]:
        exists, live = b.db.execute(
            "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1),"
            " (SELECT count(*) FROM kv WHERE scope=?1 AND (expires IS NULL OR expires > ?2))",
            (self.scope, b.now),
        ).fetchone()
        if not exists:
            raise NotFound(f"scope {self.scope!r} not found", scope=self.scope)
        rev = b.begin_change()
        b.db.execute("DELETE FROM kv WHERE scope=?", (self.scope,))
        b.db.execute("DELETE FROM scopes WHERE name=?", (self.scope,))
        b.count(self.scope, None)
        b.emit(rev, "delete-scope", self.scope, None, None, None)
        if self.audit is not None:
            summary = {"deleted_keys": live, "status": "deleted"}
            b.audit(self.audit.entry(self.scope, None, None, summary, rev))
        return {"scope": self.scope, "revision": rev, "deleted_keys": live}


class ImportOp(Op):
    """Load an export document as ONE change (one revision, one event per scope/key)."""

    def __init__(
        self, scopes: dict[str, list[tuple[str, str, Any]]], replace: bool, request_id: str | None
    ) -> None:
        self.scopes = scopes
        self.replace = replace
        self.request_id = request_id

    def fingerprint(self) -> str:
        items = {s: [(k, CANONICAL.encode(v)) for k, _, v in kv] for s, kv in self.scopes.items()}
        return fingerprint("import", self.replace, items)

    def apply(self, b: Batch) -> dict[str, Any]:
        existing = {r[0] for r in b.db.execute("SELECT name FROM scopes")}
        touched = sorted(set(self.scopes) | existing) if self.replace else sorted(self.scopes)
        rev = b.begin_change()
        if self.replace:
            for scope in sorted(existing):
                b.emit(rev, "delete-scope", scope, None, None, None)
            b.db.execute("DELETE FROM kv")
            b.db.execute("DELETE FROM scopes")
            b.reset_counts = True
            existing = set()
        keys = 0
        for scope, items in self.scopes.items():
            if scope not in existing:
                b.create_scope(rev, scope)
            b.count(scope, None)  # updates and inserts are not told apart here
            rows = []
            for key, text, value in items:
                rows.append((scope, key, text, rev, rev, b.now, b.now))
                b.emit(rev, "set", scope, key, text, value)
            # an update keeps create_revision and bumps version; a missing/expired key restarts
            b.db.executemany(
                "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version, updated,"
                " expires) VALUES(?1,?2,?3,?4,?5,1,?6,NULL) ON CONFLICT(scope, key) DO UPDATE SET"
                " create_revision=CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?7"
                "   THEN excluded.create_revision ELSE kv.create_revision END,"
                " version=CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?7"
                "   THEN 1 ELSE kv.version + 1 END,"
                " value=excluded.value, mod_revision=excluded.mod_revision,"
                " updated=excluded.updated, expires=NULL",
                rows,
            )
            keys += len(rows)
        if self.audit is not None:
            summary = {"scopes": touched, "keys": keys, "replace": self.replace}
            b.audit(self.audit.entry(None, None, None, summary, rev))
        return {"revision": rev, "scopes": len(self.scopes), "keys": keys}
