"""The etcd v3 requests the store builds (ranges, puts, deletes, compares, txns), so the store
reads as plantd logic rather than protobuf plumbing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from plantd.state.etcd.conn import EtcdConn
from plantd.state.etcd.layout import prefix_end

__all__ = [
    "cmp_create",
    "cmp_mod",
    "cmp_version",
    "delete",
    "delete_range",
    "get",
    "put",
    "scan",
    "txn",
]

_EQUAL = rpc.Compare.EQUAL


def get(key: bytes, **fields: Any) -> Any:
    """A range op reading one key (``fields``: RangeRequest options)."""
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, **fields))


def scan(start: bytes, end: bytes, **fields: Any) -> Any:
    """A range op over ``[start, end)``."""
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=start, range_end=end, **fields))


def put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes, *, prefix: bool = False) -> Any:
    end = prefix_end(key) if prefix else b""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))


def delete_range(start: bytes, end: bytes) -> Any:
    """Delete every key in ``[start, end)``."""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))


def cmp_mod(key: bytes, mod_revision: int) -> Any:
    """The key's mod_revision is ``mod_revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, target=rpc.Compare.MOD, result=_EQUAL, mod_revision=mod_revision)


def cmp_create(key: bytes, create_revision: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=_EQUAL, create_revision=create_revision
    )


def cmp_version(key: bytes, version: int) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=_EQUAL, version=version)


async def txn(
    conn: EtcdConn, compares: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
) -> Any:
    """One etcd transaction (one revision if it writes); the TxnResponse."""
    request = rpc.TxnRequest(compare=list(compares), success=list(success), failure=list(failure))
    return await conn.call("KV", "Txn", request)


async def read_many(conn: EtcdConn, ops: Sequence[Any], chunk: int) -> tuple[int, list[Any]]:
    """Range ops in txns of at most ``chunk`` ops (etcd's --max-txn-ops): ``(revision of the
    first, range responses)``. Several chunks are several snapshots: callers compare what
    they read when they write."""
    if len(ops) <= chunk:
        r = await txn(conn, (), ops)
        return int(r.header.revision), [x.response_range for x in r.responses]
    out: list[Any] = []
    first = 0
    for i in range(0, len(ops), chunk):
        r = await txn(conn, (), ops[i : i + chunk])
        first = first or int(r.header.revision)
        out += [x.response_range for x in r.responses]
    return first, out
