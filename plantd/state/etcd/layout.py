"""How the state store lies in etcd's keyspace, and how etcd's events become state events.

Under the prefix ``P`` (setting ``etcd_prefix``):

* ``P d/s/SCOPE`` a scope (value ``{"created": ts}``; its etcd create_revision is the
  scope's),
* ``P d/k/SCOPE NUL KEY`` a key: ``{"u": updated, "e": expires}`` NEWLINE value text; its
  etcd create/mod revision and version are the key's (names never hold NUL, so keys sort by
  scope, then key, as in SQLite),
* ``P d/~`` the change marker: every change txn puts it (value ``{"ts": now}``), so the
  newest change's revision is its mod_revision and every change has an event in ``P d/``,
* ``P r/REQUEST_ID`` the outcome of an idempotent write (leased: kept ~a day),
* ``P m/...`` the daemons' own records (publisher role, published revision, compaction).
"""

from __future__ import annotations

from typing import Any

from aetcd import rpc

from plantd.protocol import jsoncodec

__all__ = ["REV", "Layout", "decode_value", "encode_value", "prefix_end", "resolve"]

REV = "\x00rev"
"""Stands for "this write's revision" in a result stored before etcd assigns the revision
(no scope, key or value string holds NUL)."""


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def resolve(obj: Any, rev: int) -> Any:
    """``obj`` with every :data:`REV` replaced by ``rev``."""
    if obj == REV:
        return rev
    if isinstance(obj, dict):
        return {k: resolve(v, rev) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve(v, rev) for v in obj]
    return obj


def encode_value(text: str, updated: float, expires: float | None) -> bytes:
    return jsoncodec.dumps({"u": updated, "e": expires}) + b"\n" + text.encode()


def decode_value(raw: bytes) -> tuple[str, float, float | None]:
    """``(value text, updated, expires)`` of a stored key."""
    head, _, text = raw.partition(b"\n")
    meta = jsoncodec.loads(head)
    return text.decode(), float(meta["u"]), meta["e"]


class Layout:
    """The keys of one store under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        p = prefix.encode()
        self.prefix = p
        self.data = p + b"d/"
        self.scopes = p + b"d/s/"
        self.keys = p + b"d/k/"
        self.head = p + b"d/~"
        self.requests = p + b"r/"
        self.publisher = p + b"m/publisher"
        self.published = p + b"m/published"
        self.compacted = p + b"m/compacted"

    def scope(self, scope: str) -> bytes:
        return self.scopes + scope.encode()

    def key(self, scope: str, key: str) -> bytes:
        return self.keys + scope.encode() + b"\x00" + key.encode()

    def scope_keys(self, scope: str) -> bytes:
        """The prefix of every key of ``scope``."""
        return self.keys + scope.encode() + b"\x00"

    def request(self, request_id: str) -> bytes:
        return self.requests + request_id.encode()

    def split_key(self, raw: bytes) -> tuple[str, str]:
        scope, _, key = raw[len(self.keys) :].partition(b"\x00")
        return scope.decode(), key.decode()

    def scope_name(self, raw: bytes) -> str:
        return raw[len(self.scopes) :].decode()

    def translate(self, events: list[Any], now: float) -> list[dict[str, Any]]:
        """The state events of ONE revision's etcd events, in txn order.

        A deleted scope is one ``delete-scope`` event (the deletes of its keys in the same
        revision are not events of their own); a scope key put at its create revision is a
        ``create-scope``; the change marker gives the revision's time stamp.
        """
        put = rpc.Event.PUT
        ts = now
        dropped: set[str] = set()
        for ev in events:
            k = ev.kv.key
            if k == self.head and ev.type == put:
                ts = float(jsoncodec.loads(ev.kv.value)["ts"])
            elif k.startswith(self.scopes) and ev.type != put:
                dropped.add(self.scope_name(k))
        out: list[dict[str, Any]] = []
        for ev in events:
            kv = ev.kv
            k = kv.key
            rev = kv.mod_revision
            if k.startswith(self.keys):
                scope, key = self.split_key(k)
                if ev.type == put:
                    text, updated, _ = decode_value(kv.value)
                    value = jsoncodec.loads(text)
                    out.append(_event(scope, key, "set", value, rev, updated))
                elif scope not in dropped:
                    out.append(_event(scope, key, "delete", None, rev, ts))
            elif k.startswith(self.scopes):
                scope = self.scope_name(k)
                if ev.type != put:
                    out.append(_event(scope, None, "delete-scope", None, rev, ts))
                elif kv.create_revision == kv.mod_revision:
                    out.append(_event(scope, None, "create-scope", None, rev, ts))
        return out


def _event(scope: str, key: str | None, op: str, value: Any, rev: int, ts: float) -> dict[str, Any]:
    return {"scope": scope, "key": key, "op": op, "value": value, "revision": rev, "ts": ts}
