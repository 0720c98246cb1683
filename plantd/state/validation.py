"""Request validation: every argument checked (naming the field) before a write is queued.

Sizes are UTF-8 bytes so they bound what travels on the wire. Validation builds the ops of
plantd.state.ops; nothing here touches the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plantd.protocol import jsoncodec
from plantd.state.errors import InvalidArgument, LimitExceeded
from plantd.state.ops import KeyOp

OP_FIELDS = frozenset({"op", "scope", "key", "value", "ttl", "prev_revision", "if_absent"})


@dataclass(frozen=True)
class Limits:
    """Request limits; sizes are UTF-8 bytes so they bound what travels on the wire.

    The default value limit keeps a get reply well inside the broker's 1 MiB message limit.
    """

    max_scope_length: int = 128
    max_key_length: int = 512
    max_value_bytes: int = 512 * 1024
    max_txn_ops: int = 128
    max_request_id_length: int = 128
    max_ttl: float = 10 * 365 * 86400.0


def encode_value(value: Any, limits: Limits, what: str) -> str:
    """Compact JSON text of a value as stored; NaN, Infinity and non-JSON types refused."""
    try:
        data = jsoncodec.dumps_strict(value)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what}: value is not JSON-serializable: {e}") from None
    if len(data) > limits.max_value_bytes:
        raise LimitExceeded("max_value_bytes", limits.max_value_bytes, len(data), what)
    return data.decode()


def check_name(name: Any, kind: str, limit_name: str, maximum: int) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{kind} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise InvalidArgument(f"{kind} {name!r} contains a NUL character")
    if name.isascii():  # O(1) in CPython: 1 byte per character, valid UTF-8
        if len(name) > maximum:
            raise LimitExceeded(limit_name, maximum, len(name), f"{kind} {name[:32]!r}...")
        return name
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > maximum:
        raise LimitExceeded(limit_name, maximum, size, f"{kind} {name[:32]!r}...")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{kind} {name!r} is not valid UTF-8 text") from None
    return name


def check_scope(scope: Any, limits: Limits) -> str:
    return check_name(scope, "scope", "max_scope_length", limits.max_scope_length)


def check_key(key: Any, limits: Limits) -> str:
    return check_name(key, "key", "max_key_length", limits.max_key_length)


def check_revision(rev: Any, name: str) -> int | None:
    if rev is None:
        return None
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
        raise InvalidArgument(f"{name} must be an integer >= 0, got {rev!r}")
    return rev


def check_ttl(ttl: Any, limits: Limits) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise InvalidArgument(f"ttl must be a number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise InvalidArgument(f"ttl must be > 0 seconds, got {ttl!r}")
    if ttl > limits.max_ttl:
        raise LimitExceeded("max_ttl", limits.max_ttl, ttl, "ttl")
    return float(ttl)


def check_request_id(request_id: Any, limits: Limits) -> str | None:
    if request_id is None:
        return None
    return check_name(
        request_id, "request_id", "max_request_id_length", limits.max_request_id_length
    )


def key_op_from_request(
    raw: Any, limits: Limits, what: str, default_scope: str | None = None
) -> KeyOp:
    """Validate one txn op object (unknown fields refused)."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{what}: op must be an object, got {type(raw).__name__}")
    kind = raw.get("op")
    if kind not in ("set", "delete", "check"):
        raise InvalidArgument(f"{what}: op must be set, delete or check, got {kind!r}")
    if not OP_FIELDS.issuperset(raw):
        raise InvalidArgument(f"{what}: unknown fields {sorted(set(raw) - OP_FIELDS)}")
    return new_key_op(
        limits,
        kind,
        raw.get("scope", default_scope),
        raw.get("key"),
        raw.get("prev_revision"),
        raw.get("if_absent", False),
        "value" in raw,
        raw.get("value"),
        raw.get("ttl"),
        what,
    )


def new_key_op(
    limits: Limits,
    kind: str,
    scope: Any,
    key: Any,
    prev_revision: Any,
    if_absent: Any,
    has_value: bool,
    value: Any,
    ttl: Any,
    what: str,
) -> KeyOp:
    """Validate one set/delete/check (shared by txn ops and the direct set/delete path)."""
    scope = check_scope(scope, limits)
    key = check_key(key, limits)
    prev = check_revision(prev_revision, "prev_revision")
    if not isinstance(if_absent, bool):
        raise InvalidArgument(f"{what}: if_absent must be a boolean")
    if if_absent:
        if prev not in (None, 0):
            raise InvalidArgument(f"{what}: if_absent contradicts prev_revision={prev}")
        prev = 0
    if kind == "set":
        if not has_value:
            raise InvalidArgument(f"{what}: set needs a value")
        text = encode_value(value, limits, f"{what} {scope}/{key}")
        return KeyOp(kind, scope, key, text, value, check_ttl(ttl, limits), prev)
    if ttl is not None or has_value:
        raise InvalidArgument(f"{what}: {kind} takes no value or ttl")
    if kind == "delete" and prev == 0:
        raise InvalidArgument(f"{what}: delete with prev_revision=0 can never succeed")
    if kind == "check" and prev is None:
        raise InvalidArgument(f"{what}: check needs prev_revision or if_absent")
    return KeyOp(kind, scope, key, prev_revision=prev)


def txn_ops(ops: Any, limits: Limits, default_scope: str | None) -> list[KeyOp]:
    """Validate a txn's op list: 1..max_txn_ops objects, each key at most once."""
    if isinstance(ops, dict | str | bytes) or not isinstance(ops, Iterable):
        raise InvalidArgument("txn ops must be a list of operation objects")
    op_list = list(ops)
    if not op_list:
        raise InvalidArgument("txn needs at least one op")
    if len(op_list) > limits.max_txn_ops:
        raise LimitExceeded("max_txn_ops", limits.max_txn_ops, len(op_list), "txn")
    kops = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(op_list):
        kop = key_op_from_request(raw, limits, f"txn op {i}", default_scope)
        if (kop.scope, kop.key) in seen:
            raise InvalidArgument(f"txn op {i}: duplicate key {kop.scope}/{kop.key}")
        seen.add((kop.scope, kop.key))
        kops.append(kop)
    return kops


def import_scopes(doc: Any, limits: Limits) -> dict[str, list[tuple[str, str, Any]]]:
    """Validate an export document for import: ``{scope: [(key, value text, value)]}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("scopes"), dict):
        raise InvalidArgument("import document must be an object with a 'scopes' object")
    scopes: dict[str, list[tuple[str, str, Any]]] = {}
    for scope, kv in doc["scopes"].items():
        check_scope(scope, limits)
        if not isinstance(kv, dict):
            raise InvalidArgument(f"import: scope {scope!r} must map keys to values")
        scopes[scope] = [
            (check_key(k, limits), encode_value(v, limits, f"{scope}/{k}"), v)
            for k, v in kv.items()
        ]
    return scopes


def check_limit(limit: Any) -> int | None:
    """An optional ``limit`` argument: absent, or an integer >= 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidArgument(f"limit must be an integer >= 1, got {limit!r}")
    return limit
