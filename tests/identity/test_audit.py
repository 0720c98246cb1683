"""The audit log on a real SQLite file: chain, paging, tampering caught by verify (edited,
deleted, truncated rows, edited via plain sqlite3), digests of large values, retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from plantd.identity.audit import MAX_PAGE, VALUE_LIMIT, AuditLog
from plantd.security.errors import InvalidArgument

DAY = 86400.0


def fill(log: AuditLog, n: int, start: float = 1_000_000.0, step: float = 1.0) -> None:
    for i in range(n):
        log.append(
            principal="alice" if i % 2 else "bob",
            peer="127.0.0.1",
            service="org.plantd.State",
            operation="set",
            scope="line1",
            key=f"k{i % 3}",
            old=i - 1 if i else None,
            new=i,
            revision=i + 1,
            request_id=f"req-{i}",
            outcome="ok",
            ts=start + i * step,
        )


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(tmp_path / "audit.db") as audit:
        fill(audit, 10)
        yield audit


def sql(log: AuditLog, statement: str, *args: object) -> None:
    db = sqlite3.connect(log.path)
    db.execute(statement, args)
    db.commit()
    db.close()


def test_intact_log_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert (result.ok, result.rows, result.first_bad_seq) == (True, 10, None)


def test_edited_row_is_caught_naming_its_seq(log: AuditLog) -> None:
    sql(log, "UPDATE audit SET new = '999' WHERE seq = 4")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "hash" in result.reason


def test_edit_that_recomputes_the_rows_hash_breaks_the_next_link(log: AuditLog) -> None:
    from plantd.identity.audit import row_hash

    db = sqlite3.connect(log.path)
    db.row_factory = sqlite3.Row
    row = dict(db.execute("SELECT * FROM audit WHERE seq = 4").fetchone())
    row["principal"] = "mallory"
    db.execute("UPDATE audit SET principal = ?, hash = ? WHERE seq = 4", ("mallory", row_hash(row)))
    db.commit()
    db.close()
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_deleted_middle_row_is_caught(log: AuditLog) -> None:
    sql(log, "DELETE FROM audit WHERE seq = 6")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert "missing" in result.reason


def test_truncated_tail_is_caught_by_the_head_sidecar(log: AuditLog) -> None:
    sql(log, "DELETE FROM audit WHERE seq >= 9")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 9)
    assert "head sidecar says 10" in result.reason


def test_missing_sidecar_is_reported(log: AuditLog) -> None:
    log.head_path.unlink()
    result = log.verify()
    assert not result.ok and "sidecar is missing" in result.reason


def test_large_values_are_stored_as_a_digest(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        log.append(
            principal="a",
            service="s",
            operation="set",
            outcome="ok",
            old="x" * 10,
            new="y" * (VALUE_LIMIT + 1),
        )
        (row,) = log.query().rows
        assert row["old"] == "x" * 10
        assert set(row["new"]) == {"sha256", "bytes"} and row["new"]["bytes"] == VALUE_LIMIT + 3
        assert log.verify().ok


def test_query_filters_and_pages(log: AuditLog) -> None:
    page = log.query(principal="alice", limit=2)
    assert [r["seq"] for r in page.rows] == [2, 4] and page.more and page.next == 4
    page = log.query(principal="alice", limit=2, after=page.next)
    assert [r["seq"] for r in page.rows] == [6, 8] and page.more
    page = log.query(principal="alice", limit=2, after=page.next)
    assert [r["seq"] for r in page.rows] == [10] and not page.more and page.next is None
    assert [r["seq"] for r in log.query(key="k0").rows] == [1, 4, 7, 10]
    assert [r["seq"] for r in log.query(since=1_000_007.0).rows] == [8, 9, 10]
    assert log.query(scope="nope").rows == []
    assert log.query(limit=1).rows[0]["new"] == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": MAX_PAGE + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"after": "x"}, "after"),
        ({"after": -1}, "after"),
    ],
)
def test_bad_paging_arguments_name_the_field(log: AuditLog, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        log.query(**kwargs)
    assert err.value.field == field and field in str(err.value)


def test_retention_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        fill(log, 10, start=0.0, step=DAY)  # one row a day
        deleted = log.prune(retention=3 * DAY, now=10 * DAY)
        assert deleted == 7  # the cutoff is day 7: the rows of days 0..6 go
        rows = log.query(limit=100).rows
        assert rows[0]["seq"] == 8 and rows[-1]["operation"] == "audit.prune"
        assert rows[-1]["new"]["pruned_through"] == 7
        assert log.verify().ok
        assert log.prune(retention=3 * DAY, now=10 * DAY) == 0
        # after pruning, a deleted row right after the anchor is still caught
        sql(log, "DELETE FROM audit WHERE seq = 8")
        result = log.verify()
        assert (result.ok, result.first_bad_seq) == (False, 8)


def test_rewriting_the_anchor_is_caught(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        fill(log, 6, start=0.0, step=DAY)
        log.prune(retention=2 * DAY, now=5 * DAY)
        sql(log, "DELETE FROM audit WHERE seq = (SELECT MIN(seq) FROM audit)")
        sql(log, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'anchor_seq'")
        assert not log.verify().ok
