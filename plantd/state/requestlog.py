"""The request log: a write carrying a ``request_id`` is applied once; a retry gets the
stored outcome (result or error) instead of a second change, and the same id with a
different request is refused. The ``requests`` table keeps the last ``request_history`` ids.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from plantd.protocol import jsoncodec
from plantd.state.errors import InvalidArgument, StateError, StorageError

if TYPE_CHECKING:
    from plantd.state.batch import Batch, Op

CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""Value text inside request fingerprints: the stdlib's, as in every stored fingerprint so far
(stored value text comes from orjson, which writes some floats differently, e.g. 1e-7)."""


def fingerprint(*parts: Any) -> str:
    """What a request asked for, to tell a retry from a different request under one id."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]


def apply_once(b: Batch, op: Op) -> tuple[bool, Any]:
    """Apply ``op`` in batch ``b`` unless its request id was seen: ``(ok, result|error)``.

    A StateError of the op is its outcome (and is logged); a StorageError fails the batch.
    """
    rid = op.request_id
    fp = ""
    if rid is not None:
        fp = op.fingerprint()
        hit = b.requests.get(rid)
        if hit is None:
            row = b.db.execute(
                "SELECT fingerprint, result FROM requests WHERE request_id=?", (rid,)
            ).fetchone()
            hit = (row[0], row[1]) if row else None
        if hit is not None:
            if hit[0] != fp:
                return False, InvalidArgument(
                    f"request_id {rid!r} was already used for a different request",
                    request_id=rid,
                )
            doc = jsoncodec.loads(hit[1])
            if "error" in doc:
                return False, StateError.from_dict(doc["error"])
            return True, doc["result"]
    result: dict[str, Any] = {}
    error: StateError | None = None
    try:
        result = op.apply(b)
    except StorageError:
        raise
    except StateError as e:
        error = e
    if rid is not None:
        text = json.dumps({"result": result} if error is None else {"error": error.to_dict()})
        b.requests[rid] = (fp, text)
        b.request_rows.append((rid, fp, text, b.now))
    return (True, result) if error is None else (False, error)


def record(
    db: sqlite3.Connection, rows: list[tuple[str, str, str, float]], count: int, keep: int
) -> int:
    """Store the outcomes of a batch's requests, drop the oldest beyond ``keep``; return the
    number of rows now kept."""
    db.executemany(
        "INSERT INTO requests(request_id, fingerprint, result, ts) VALUES(?,?,?,?)", rows
    )
    count += len(rows)
    if count > keep:
        db.execute(
            "DELETE FROM requests WHERE seq IN (SELECT seq FROM requests ORDER BY seq LIMIT ?)",
            (count - keep,),
        )
        count = keep
    return count
