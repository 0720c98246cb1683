"""The write path without a daemon or an event loop: ``apply_batch`` on a plain
``sqlite3`` connection holding the schema (plantd.state.batch)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.state.batch import HistoryLimits, WriterState, apply_batch
from plantd.state.errors import Conflict, CorruptDatabase, InvalidArgument, NotFound
from plantd.state.ops import CreateScopeOp, DeleteScopeOp, TxnOp
from plantd.state.schema import Integrity, check_database, create_schema
from plantd.state.ttl import ReapOp
from plantd.state.validation import Limits, new_key_op, txn_ops

LIMITS = Limits()
NOW = 1_700_000_000.0


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_schema(conn)
    yield conn
    conn.close()


def _set(scope: str, key: str, value: object, **kw: object) -> TxnOp:
    kop = new_key_op(
        LIMITS,
        "set",
        scope,
        key,
        kw.get("prev_revision"),
        False,
        True,
        value,
        kw.get("ttl"),
        "set",
    )
    rid = kw.get("request_id")
    return TxnOp([kop], rid if isinstance(rid, str) else None, single=True)


def _meta(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT name, value FROM meta").fetchall())


def test_a_batch_is_one_transaction_with_one_revision_per_change(
    db: sqlite3.Connection,
) -> None:
    ops = [
        CreateScopeOp("s", None),
        _set("s", "a", 1),
        _set("s", "b", {"x": [1, 2]}),
        TxnOp(
            txn_ops([{"op": "set", "scope": "t", "key": "k", "value": "v"}], LIMITS, None),
            None,
            single=False,
        ),
    ]
    done = apply_batch(db, ops, NOW, WriterState())
    assert not db.in_transaction
    assert [ok for ok, _ in done.outcomes] == [True] * 4
    assert done.outcomes[1][1]["revision"] == 2 and done.outcomes[3][1]["revision"] == 4
    assert done.revision == 4 and _meta(db)["revision"] == 4
    assert [(e["revision"], e["op"]) for e in done.events] == [
        (1, "create-scope"),
        (2, "set"),
        (3, "set"),
        (4, "create-scope"),
        (4, "set"),
    ]
    assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == done.history == 5
    assert done.key_deltas == {"s": 2, "t": 1}
    rows = db.execute("SELECT scope, key, value, version FROM kv ORDER BY scope, key").fetchall()
    assert rows == [("s", "a", "1", 1), ("s", "b", '{"x":[1,2]}', 1), ("t", "k", '"v"', 1)]


def test_a_failing_op_fails_alone_and_writes_nothing(db: sqlite3.Connection) -> None:
    first = apply_batch(db, [_set("s", "k", 1)], NOW, WriterState())
    start = WriterState(first.revision, first.compact, first.history, first.requests)
    done = apply_batch(
        db,
        [
            _set("s", "k", 2, prev_revision=7),  # stale compare
            DeleteScopeOp("nope", None),
            _set("s", "k", 3, prev_revision=1),
        ],
        NOW,
        start,
    )
    (ok0, e0), (ok1, e1), (ok2, r2) = done.outcomes
    assert not ok0 and isinstance(e0, Conflict) and e0.current_revision == 1
    assert not ok1 and isinstance(e1, NotFound)
    assert ok2 and r2["revision"] == 2 and r2["version"] == 2
    assert done.revision == 2 and [e["revision"] for e in done.events] == [2]
    assert db.execute("SELECT value FROM kv WHERE key='k'").fetchone() == ("3",)


def test_an_sqlite_error_rolls_the_whole_batch_back(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TRIGGER no_b BEFORE INSERT ON kv WHEN NEW.key='b'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        apply_batch(db, [_set("s", "a", 1), _set("s", "b", 2)], NOW, WriterState())
    assert not db.in_transaction
    assert db.execute("SELECT count(*) FROM kv").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 0
    assert _meta(db)["revision"] == 0


def test_request_ids_apply_once_and_are_kept_to_the_limit(db: sqlite3.Connection) -> None:
    keep = HistoryLimits(history_size=10_000, request_history=2)
    done = apply_batch(
        db,
        [_set("s", "k", 1, request_id="r1"), _set("s", "k", 1, request_id="r1")],
        NOW,
        WriterState(),
        keep=keep,
    )
    assert done.outcomes[0] == done.outcomes[1] and done.revision == 1  # the retry: no change
    start = WriterState(done.revision, done.compact, done.history, done.requests)
    done = apply_batch(
        db,
        [
            _set("s", "k", 99, request_id="r1"),  # same id, different request
            _set("s", "x", 1, request_id="r2"),
            _set("s", "y", 1, request_id="r3"),
        ],
        NOW,
        start,
        keep=keep,
    )
    assert isinstance(done.outcomes[0][1], InvalidArgument)
    assert done.requests == 2
    ids = [r[0] for r in db.execute("SELECT request_id FROM requests ORDER BY seq")]
    assert ids == ["r2", "r3"]


def test_history_is_pruned_by_whole_revisions(db: sqlite3.Connection) -> None:
    keep = HistoryLimits(history_size=5, request_history=10)
    done = apply_batch(db, [_set("s", f"k{i}", i) for i in range(5)], NOW, WriterState(), keep=keep)
    # 6 events; revision 1 holds two (create-scope + set): dropping one event to keep 5
    # drops that whole revision, leaving 4
    assert done.history == 4 and done.compact == 1
    assert _meta(db)["compact_revision"] == 1
    revs = [r[0] for r in db.execute("SELECT DISTINCT revision FROM changes ORDER BY 1")]
    assert revs == [2, 3, 4, 5]


def test_expired_keys_are_reaped_as_ordinary_deletes(db: sqlite3.Connection) -> None:
    done = apply_batch(
        db, [_set("s", "a", 1, ttl=5), _set("s", "b", 2, ttl=50)], NOW, WriterState()
    )
    start = WriterState(done.revision, done.compact, done.history, done.requests)
    reaped = apply_batch(db, [ReapOp(10)], NOW + 10, start)
    assert reaped.outcomes == [(True, {"expired": 1})]
    assert [(e["op"], e["key"], e["revision"]) for e in reaped.events] == [("delete", "a", 3)]
    assert [r[0] for r in db.execute("SELECT key FROM kv")] == ["b"]


def test_the_one_database_check_accepts_the_schema_and_refuses_others(tmp_path: Path) -> None:
    good = sqlite3.connect(tmp_path / "good.db", isolation_level=None)
    create_schema(good)
    for integrity in Integrity:
        meta = check_database(good, "good.db", integrity=integrity, refusal="refused")
        assert meta["schema_version"] == 1
    good.close()
    empty = sqlite3.connect(":memory:")
    assert (
        check_database(empty, "e", integrity=Integrity.QUICK, refusal="r", allow_empty=True) == {}
    )
    with pytest.raises(CorruptDatabase, match="not a plantd state backup"):
        check_database(empty, "e", integrity=Integrity.FULL, kind="backup", refusal="r")
    empty.execute("CREATE TABLE users(id)")
    with pytest.raises(CorruptDatabase, match=r"not a plantd state store \(tables: users\); no"):
        check_database(empty, "e", integrity=Integrity.QUICK, refusal="no", allow_empty=True)
