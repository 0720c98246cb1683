"""Page readers of the state store: one bounded page per call, in one read snapshot.

Each function runs on a reader connection's thread inside a read transaction (the caller
opens it) and touches only the rows of its page through the ``(scope, key)`` primary key, so
a page costs the same in a scope of 10^3 or 10^6 keys. A page is bounded by ``limit`` rows
and by ``max_bytes`` of estimated reply text (at least one row per page, so a page always
advances). Cursors are names: the next page starts strictly after the last one returned,
which keeps paging stable under concurrent writes.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from plantd.protocol import jsoncodec

#: JSON overhead of one listed key besides its name and value (field names, metadata)
_KEY_OVERHEAD = 140

_PREFIX_END = " AND {col} < ?{n} || CAST(x'FF' AS TEXT)"
"""Upper bound of a prefix range: every UTF-8 string starting with the prefix sorts below
prefix + 0xFF (no UTF-8 byte is 0xFF), so the primary key is scanned over the range only."""


def _bytes(column: str) -> str:
    """SQL for the UTF-8 size of a text column (``length`` of text counts characters)."""
    return f"length(CAST({column} AS BLOB))"


def key_item(row: tuple[Any, ...], include_values: bool) -> dict[str, Any]:
    """A listed key from ``(key, value text, create_revision, mod_revision, version, updated,
    expires)``: its metadata, and its value with ``include_values``."""
    key, text, crev, mrev, ver, updated, expires = row
    item = {
        "key": key,
        "create_revision": crev,
        "mod_revision": mrev,
        "version": ver,
        "updated": updated,
        "expires": expires,
    }
    if include_values:
        item["value"] = jsoncodec.loads(text)
    return item


def revision(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0])


def scope_exists(db: sqlite3.Connection, scope: str) -> bool:
    return db.execute("SELECT 1 FROM scopes WHERE name=?", (scope,)).fetchone() is not None


def count_rows(db: sqlite3.Connection, scopes: list[str]) -> dict[str, int]:
    """Stored rows per scope (the seed of plantd.state.counts; a pass over those scopes)."""
    rows = db.execute(
        "SELECT scope, count(*) FROM kv WHERE scope IN (SELECT value FROM json_each(?))"
        " GROUP BY scope",
        (jsoncodec.dumps(scopes).decode(),),
    ).fetchall()
    return {s: n for s, n in rows}


def count_live_prefix(db: sqlite3.Connection, scope: str, prefix: str, now: float) -> int:
    """Live keys of ``scope`` starting with ``prefix`` (a range count: cost ∝ matches)."""
    sql = (
        "SELECT count(*) FROM kv WHERE scope=?1 AND key >= ?2"
        + _PREFIX_END.format(col="key", n=2)
        + " AND (expires IS NULL OR expires > ?3)"
    )
    return int(db.execute(sql, (scope, prefix, now)).fetchone()[0])


def keys_page(
    db: sqlite3.Connection,
    scope: str,
    *,
    prefix: str,
    glob: str | None,
    after: str | None,
    limit: int,
    include_values: bool,
    max_bytes: int,
    now: float,
) -> tuple[list[dict[str, Any]], bool]:
    """Live keys of ``scope`` after ``after``, sorted by key: (items, more)."""
    where = ["scope=?1", "(expires IS NULL OR expires > ?2)"]
    params: list[Any] = [scope, now]
    if prefix:
        params.append(prefix)
        n = len(params)
        where.append(f"key >= ?{n}" + _PREFIX_END.format(col="key", n=n))
    if after is not None:
        params.append(after)
        where.append(f"key > ?{len(params)}")
    if glob is not None:
        params.append(glob)
        where.append(f"key GLOB ?{len(params)}")
    params.append(limit + 1)
    value = "value" if include_values else "NULL"
    rows = db.execute(
        f"SELECT key, {value}, create_revision, mod_revision, version, updated, expires,"
        f" {_bytes('key')} + {_bytes(value) if include_values else 0}"
        f" FROM kv WHERE {' AND '.join(where)} ORDER BY key LIMIT ?{len(params)}",
        params,
    ).fetchall()
    more = len(rows) > limit
    out: list[dict[str, Any]] = []
    size = 0
    for row in rows[:limit]:
        size += row[-1] + _KEY_OVERHEAD  # the row's last column: its size in bytes
        if out and size > max_bytes:
            more = True
            break
        out.append(key_item(row[:-1], include_values))
    return out, more


def scopes_page(
    db: sqlite3.Connection, *, prefix: str, after: str | None, limit: int
) -> tuple[list[tuple[str, int]], bool, int]:
    """Scopes after ``after`` starting with ``prefix``: ([(name, create_revision)], more,
    total matching ``prefix``)."""
    where = ["1"]
    params: list[Any] = []
    if prefix:
        params.append(prefix)
        where.append("name >= ?1" + _PREFIX_END.format(col="name", n=1))
    total = db.execute(f"SELECT count(*) FROM scopes WHERE {' AND '.join(where)}", params)
    total_n = int(total.fetchone()[0])
    if after is not None:
        params.append(after)
        where.append(f"name > ?{len(params)}")
    params.append(limit + 1)
    rows = db.execute(
        f"SELECT name, create_revision FROM scopes WHERE {' AND '.join(where)}"
        f" ORDER BY name LIMIT ?{len(params)}",
        params,
    ).fetchall()
    return rows[:limit], len(rows) > limit, total_n


def export_page(
    db: sqlite3.Connection,
    *,
    after: tuple[str, str] | None,
    limit: int,
    max_bytes: int,
    now: float,
) -> tuple[dict[str, dict[str, Any]], int, tuple[str, str] | None]:
    """Scopes and live keys after the cursor ``(scope, key)`` in (scope, key) order:
    (``{scope: {key: value}}``, keys in the page, next cursor or None).

    Empty scopes appear too (each counts as one item of the page). The cursor's key is
    ``""`` when the page ended at a scope with no key in it (keys are never empty).
    """
    s0, k0 = after or ("", "")
    rows = db.execute(
        f"SELECT scope, key, value, {_bytes('scope')} + {_bytes('key')} + {_bytes('value')}"
        " FROM kv WHERE (scope, key) > (?1, ?2)"
        " AND (expires IS NULL OR expires > ?3) ORDER BY scope, key LIMIT ?4",
        (s0, k0, now, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    kept: list[tuple[str, str, str]] = []
    size = 0
    for scope, key, text, nbytes in rows[:limit]:
        size += nbytes + 8
        if kept and size > max_bytes:
            more = True
            break
        kept.append((scope, key, text))
    upper = kept[-1][0] if more else None
    names = [
        r[0]
        for r in db.execute(
            "SELECT name FROM scopes WHERE name > ?1 AND (?2 IS NULL OR name <= ?2)"
            " ORDER BY name LIMIT ?3",
            (s0, upper, limit + 1),
        )
    ]
    if len(names) > limit:  # a run of empty scopes: the page ends at the limit-th scope
        names = names[:limit]
        more = True
        kept = [r for r in kept if r[0] <= names[-1]]
    out: dict[str, dict[str, Any]] = {}
    if kept and kept[0][0] == s0:
        out[s0] = {}  # the cursor's scope continues in this page
    for name in names:
        out[name] = {}
    for scope, key, text in kept:
        out[scope][key] = jsoncodec.loads(text)
    cursor: tuple[str, str] | None = None
    if more:
        last_scope = max(kept[-1][0] if kept else "", names[-1] if names else "")
        last_key = kept[-1][1] if kept and kept[-1][0] == last_scope else ""
        cursor = (last_scope, last_key)
    return out, len(kept), cursor
