"""History and the change feed: the ``changes`` table (kept to ``history_size`` events,
pruned by whole revisions) and the listeners told of each commit in commit order."""

from __future__ import annotations

import inspect
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from plantd.protocol import jsoncodec

log = logging.getLogger("plantd.state.store")

Event = dict[str, Any]
"""A change ``{scope, key, op, value, revision, ts}``; op: set|delete|create-scope|delete-scope."""
Listener = Callable[[Event], Awaitable[None] | None]

INSERT_CHANGES_SQL = (
    "INSERT INTO changes(revision, idx, op, scope, key, value, ts) VALUES(?,?,?,?,?,?,?)"
)
INSERT_CHANGES_JSON_SQL = (
    "INSERT INTO changes(revision, idx, op, scope, key, value, ts)"
    " SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),"
    " json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),"
    " json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), ?2 FROM json_each(?1) j"
)
"""INSERT_CHANGES_SQL for many rows as ONE statement (see plantd.state.batch.write_rows)."""


def prune_history(db: sqlite3.Connection, count: int, compact: int, keep: int) -> tuple[int, int]:
    """Drop whole oldest revisions so at most ``keep`` events remain; return the new
    ``(count, compact_revision)``."""
    if count <= keep:
        return count, compact
    cut = db.execute(
        "SELECT revision FROM changes ORDER BY revision, idx LIMIT 1 OFFSET ?",
        (count - keep - 1,),
    ).fetchone()[0]
    deleted = db.execute("DELETE FROM changes WHERE revision <= ?", (cut,)).rowcount
    return count - deleted, max(compact, cut)


def changes_after(
    db: sqlite3.Connection, revision: int, limit: int | None
) -> tuple[int, list[Event] | None]:
    """``(compact_revision, events after revision)`` in one read; ``None`` if compacted.

    With ``limit``, stops after the revision holding the limit-th event (never splits a
    revision, so resuming from the last event's revision loses nothing).
    """
    compact = db.execute("SELECT value FROM meta WHERE name='compact_revision'").fetchone()[0]
    if revision < compact:
        return compact, None
    upper = None
    if limit is not None:
        last = db.execute(
            "SELECT revision FROM changes WHERE revision > ?"
            " ORDER BY revision, idx LIMIT 1 OFFSET ?",
            (revision, limit - 1),
        ).fetchone()
        upper = last[0] if last else None
    rows = db.execute(
        "SELECT revision, op, scope, key, value, ts FROM changes"
        " WHERE revision > ?1 AND (?2 IS NULL OR revision <= ?2)"
        " ORDER BY revision, idx",
        (revision, upper),
    ).fetchall()
    return compact, [
        {
            "scope": scope,
            "key": key,
            "op": op,
            "value": jsoncodec.loads(text) if text is not None else None,
            "revision": rev,
            "ts": ts,
        }
        for rev, op, scope, key, text, ts in rows
    ]


class ChangeFeed:
    """The listeners of committed changes; a failing listener never stops the others."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    async def publish(self, events: list[Event]) -> None:
        """Tell every listener of every event, in commit order (awaited if async)."""
        listeners = list(self._listeners)
        for event in events:
            for cb in listeners:
                try:
                    r = cb(dict(event))
                    if r is not None and inspect.isawaitable(r):
                        await r
                except Exception:
                    log.exception("state store: change listener %r failed", cb)
