"""The state database's schema and the ONE check that a file is an intact state store.

Open, backup and restore all run :func:`check_database`, so a file one of them accepts the
others accept too, and a damaged or foreign file is refused the same way by each.
"""

from __future__ import annotations

import sqlite3
from enum import Enum
from typing import Any

from plantd.identity.audit import AUDIT_TABLE_SQL, meta_table_sql
from plantd.state.errors import CorruptDatabase, StorageError

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE scopes(
    name TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE kv(
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    expires REAL,
    PRIMARY KEY(scope, key)
) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv(expires) WHERE expires IS NOT NULL;
CREATE TABLE changes(
    revision INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    op TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT,
    value TEXT,
    ts REAL NOT NULL,
    PRIMARY KEY(revision, idx)
) WITHOUT ROWID;
CREATE TABLE requests(
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    ts REAL NOT NULL
);
"""
TABLES = frozenset({"meta", "scopes", "kv", "changes", "requests"})
#: the table holding the state audit chain's anchor (the ``audit`` table is audit.db's)
AUDIT_META = "audit_meta"
AUDIT_SCHEMA = AUDIT_TABLE_SQL + meta_table_sql(AUDIT_META)
"""The audit trail of the state service's writes, in the same file as the writes: a row is
committed in the same transaction as the write it records. A database made before the
audit moved here gets these tables on open (:func:`ensure_audit_tables`)."""


def ensure_audit_tables(db: sqlite3.Connection) -> None:
    """Create the audit tables if missing (idempotent; one transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in AUDIT_SCHEMA.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


#: the probe of a database too large for quick_check: first and last row of each table and
#: index (a damaged b-tree page on those paths raises SQLITE_CORRUPT)
_PROBES = tuple(
    f"SELECT * FROM (SELECT {cols} FROM {table} ORDER BY {cols} LIMIT 1)"
    f" UNION ALL SELECT * FROM (SELECT {cols} FROM {table} ORDER BY {desc} LIMIT 1)"
    for table, cols, desc in (
        ("meta", "name", "name DESC"),
        ("scopes", "name", "name DESC"),
        ("kv", "scope, key", "scope DESC, key DESC"),
        ("changes", "revision, idx", "revision DESC, idx DESC"),
        ("requests", "seq", "seq DESC"),
    )
)


class Integrity(Enum):
    """How much of the file :func:`check_database` reads."""

    QUICK = "PRAGMA quick_check(20)"  # every page, no index/table cross-check
    FULL = "PRAGMA integrity_check(5)"  # every page and every index entry
    PROBE = ""  # both ends of every table: the same cost at 10^3 or 10^6 keys


def create_schema(db: sqlite3.Connection) -> None:
    """Create the tables of an empty database in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in (SCHEMA + AUDIT_SCHEMA).split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.executemany(
            "INSERT INTO meta(name, value) VALUES(?, ?)",
            [("schema_version", SCHEMA_VERSION), ("revision", 0), ("compact_revision", 0)],
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def check_database(
    db: sqlite3.Connection,
    path: str,
    *,
    label: str | None = None,
    integrity: Integrity,
    kind: str = "store",
    refusal: str,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Refuse a damaged, foreign or newer-schema database; return its ``meta`` table.

    ``label`` names the file in messages (default: ``path``), ``kind`` what it should be
    (store/backup), ``refusal`` what the caller does instead (e.g. "refusing to open it").
    An empty database (no tables) passes only with ``allow_empty`` and returns ``{}``.
    """
    label = label or path
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if integrity is Integrity.PROBE:
            if TABLES <= tables:
                for probe in _PROBES:
                    db.execute(probe).fetchall()
            rows = ["ok"]
        else:
            rows = [r[0] for r in db.execute(integrity.value)]
        if rows != ["ok"]:
            check = integrity.value.split()[1].split("(")[0]
            raise CorruptDatabase(
                f"{label} failed {check}: {'; '.join(map(str, rows[:5]))}; {refusal}",
                path=path,
            )
        if not tables and allow_empty:
            return {}
        if not TABLES <= tables:
            raise CorruptDatabase(
                f"{label} is an SQLite database but not a plantd state {kind}"
                f" (tables: {', '.join(sorted(tables)) or 'none'}); {refusal}",
                path=path,
            )
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise CorruptDatabase(f"{label} is damaged: {e}; {refusal}", path=path) from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise StorageError(
            f"{label} has schema version {meta.get('schema_version')}, this plantd supports"
            f" {SCHEMA_VERSION}; {refusal}"
        )
    return meta
