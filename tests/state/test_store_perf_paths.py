"""Fast paths of StateStore: one database hand-off per write batch, batched txn lookups,
grouped gets, and the one-job hand-off they rely on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.state import Conflict, NotFound, StateStore, StorageError, dbthread
from plantd.storage.sqlite import SqliteThread
from tests.support.clock import FakeClock

# --------------------------------------------------------------------------- private API guard


async def test_a_job_runs_once_on_the_connections_own_thread_in_order(tmp_path: Path) -> None:
    """The store runs whole batches as one job on the connection's thread
    (plantd.storage.sqlite.SqliteThread; formerly aiosqlite's private ``_execute``/``_conn``)."""
    conn = await SqliteThread.connect(tmp_path / "x.db")
    try:
        await conn.execute("CREATE TABLE t(x)")
        seen: list[Any] = []

        def fn(db: sqlite3.Connection) -> int:
            seen.append((type(db), threading.get_ident()))
            db.execute("INSERT INTO t VALUES(1)")
            return db.execute("SELECT count(*) FROM t").fetchone()[0]

        # FIFO with the connection's ordinary calls, on its own thread
        first = asyncio.ensure_future(conn.execute("INSERT INTO t VALUES(0)"))
        await asyncio.sleep(0)  # queued first
        assert await dbthread.on_db_thread(conn, fn) == 2
        await first
        assert seen == [(sqlite3.Connection, seen[0][1])]
        assert seen[0][1] != threading.get_ident()
    finally:
        await conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await conn.execute_fetchall("SELECT 1")  # closed: refused, not queued forever


# --------------------------------------------------------------------------- one hand-off


async def test_a_write_batch_is_one_hand_off(db_path: Path, monkeypatch) -> None:
    async with await StateStore.open(db_path, reap_interval=3600) as s:
        calls = {"writer": 0, "reader": 0}
        real = dbthread.on_db_thread

        def counting(conn: SqliteThread, fn: Any) -> Any:
            calls["writer" if conn is s._writer else "reader"] += 1
            return real(conn, fn)

        monkeypatch.setattr(dbthread, "on_db_thread", counting)
        real_fetchall = s._writer.execute_fetchall
        other = 0

        async def no_other_calls(*a: Any, **k: Any) -> Any:
            nonlocal other
            other += 1
            return await real_fetchall(*a, **k)

        monkeypatch.setattr(s._writer, "execute_fetchall", no_other_calls)
        commits = s.commits
        results = await asyncio.gather(
            *(s.set("s", f"k{i}", i, request_id=f"r{i}") for i in range(64)),
            s.txn([{"op": "set", "scope": "t", "key": f"k{i}", "value": i} for i in range(50)]),
        )
        assert len({r["revision"] for r in results}) == 65
        commits = s.commits - commits
        # one hand-off per commit, plus drains that found the queue already taken (at most
        # one per adopted drain and the two queued ahead): never one per write
        assert commits <= calls["writer"] <= 2 * commits + 2 and other == 0
        assert commits < 10  # group commit still groups


# --------------------------------------------------------------------------- batched lookups

TRICKY_KEYS = [
    "plain",
    "ünïcödé",
    "emoji-\U0001f600",
    'quote"d',
    "back\\slash",
    "ctl\x01\n\t",
    "1",
    "[1]",
    " spaced ",
    "\u2028sep",
    "\x7f",
]


async def _txn_run(path: Path, json_each: bool) -> tuple[list[Any], list[dict], list[Any]]:
    clock = FakeClock()
    async with await StateStore.open(path, clock=clock, reap_interval=3600) as s:
        s._json_each = json_each
        events: list[dict] = []
        s.add_listener(events.append)
        out: list[Any] = []
        ops = [{"op": "set", "scope": "a", "key": k, "value": k} for k in TRICKY_KEYS]
        ops += [{"op": "set", "scope": "b", "key": k, "value": 1, "ttl": 5} for k in TRICKY_KEYS]
        out.append(await s.txn(ops))
        out.append(await s.txn(ops[: len(TRICKY_KEYS)]))  # updates: version 2, same create
        clock.now += 6  # scope b keys expired: each expiry is its own revision first
        mixed = [
            {"op": "set", "scope": "b", "key": TRICKY_KEYS[0], "value": 2, "prev_revision": 0},
            {"op": "delete", "scope": "a", "key": TRICKY_KEYS[1], "prev_revision": 2},
            {"op": "check", "scope": "a", "key": TRICKY_KEYS[2], "prev_revision": 2},
            {"op": "set", "scope": "new", "key": TRICKY_KEYS[3], "value": 3},
        ]
        out.append(await s.txn(mixed))
        for bad in (
            [{"op": "delete", "scope": "a", "key": TRICKY_KEYS[1]}],
            [
                {"op": "delete", "scope": "zz", "key": "k"},
                {"op": "check", "scope": "a", "key": "x", "prev_revision": 0},
            ],
            [
                {"op": "check", "scope": "a", "key": TRICKY_KEYS[4], "prev_revision": 0},
                {"op": "set", "scope": "a", "key": "y", "value": 1},
            ],
        ):
            try:
                await s.txn(bad)
            except (Conflict, NotFound) as e:
                out.append(e.to_dict())
        listing = [await s.list_keys(scope, include_values=True) for scope in ("a", "b", "new")]
        out.append(listing)
        out.append(await s.changes_since(0))
        return out, events, await s.list_scopes()


async def test_batched_txn_lookups_match_per_key_lookups(tmp_path: Path) -> None:
    fast = await _txn_run(tmp_path / "fast.db", json_each=True)
    slow = await _txn_run(tmp_path / "slow.db", json_each=False)
    assert fast == slow
    results, events, _ = fast
    first, second, mixed = results[0], results[1], results[2]
    assert {r["version"] for r in first["results"]} == {1}
    assert [(r["create_revision"], r["version"]) for r in second["results"]] == [(1, 2)] * len(
        TRICKY_KEYS
    )
    # expiry deletes of the touched expired keys come first, each with its own revision
    assert mixed["revision"] == 4 and [e["op"] for e in events if e["revision"] == 3] == ["delete"]
    assert mixed["results"][0]["version"] == 1 and mixed["results"][0]["create_revision"] == 4
    assert [e["code"] for e in results[3:6]] == ["not_found", "not_found", "conflict"]


async def test_store_opened_without_json1_falls_back(db_path: Path, monkeypatch) -> None:
    real = SqliteThread.execute_fetchall

    async def no_json1(self: SqliteThread, sql: str, *a: Any) -> Any:
        if "json_each" in sql:
            raise sqlite3.OperationalError("no such table: json_each")
        return await real(self, sql, *a)

    monkeypatch.setattr(SqliteThread, "execute_fetchall", no_json1)
    async with await StateStore.open(db_path) as s:
        assert s._json_each is False
        r = await s.txn([{"op": "set", "scope": "s", "key": f"k{i}", "value": i} for i in range(3)])
        assert r["revision"] == 1 and (await s.get("s", "k2"))["value"] == 2


# --------------------------------------------------------------------------- grouped gets


async def test_concurrent_gets_are_grouped_and_read_committed_data(
    db_path: Path, monkeypatch
) -> None:
    async with await StateStore.open(db_path, reap_interval=3600) as s:
        await s.txn([{"op": "set", "scope": "s", "key": f"k{i}", "value": i} for i in range(50)])
        handoffs = 0
        real = dbthread.on_db_thread

        def counting(conn: SqliteThread, fn: Any) -> Any:
            nonlocal handoffs
            handoffs += conn is s._reader
            return real(conn, fn)

        monkeypatch.setattr(dbthread, "on_db_thread", counting)
        got = await asyncio.gather(
            *(s.get("s", f"k{i}") for i in range(50)),
            s.get("s", "missing"),
            s.get("nope", "k"),
            return_exceptions=True,
        )
        assert [g["value"] for g in got[:50]] == list(range(50))
        assert {g["revision"] for g in got[:50]} == {1}
        assert isinstance(got[50], NotFound) and "key 'missing'" in str(got[50])
        assert isinstance(got[51], NotFound) and "scope 'nope'" in str(got[51])
        assert handoffs <= 2
        # read-your-writes: a get issued after the ack sees the write, even while gets and
        # writes interleave
        for i in range(20):
            w = await s.set("s", "k0", {"n": i})
            r, _ = await asyncio.gather(s.get("s", "k0"), s.set("s", "k1", i))
            assert r["value"] == {"n": i} and r["mod_revision"] == w["revision"]
        # a cancelled get does not disturb the others
        t = asyncio.ensure_future(s.get("s", "k2"))
        others = asyncio.gather(*(s.get("s", f"k{i}") for i in range(2, 6)))
        t.cancel()
        assert [g["value"] for g in await others] == [2, 3, 4, 5]


async def test_get_expiry_uses_the_time_of_the_call(db_path: Path) -> None:
    clock = FakeClock()
    async with await StateStore.open(db_path, clock=clock, reap_interval=3600) as s:
        await s.set("s", "k", 1, ttl=10)
        before = asyncio.ensure_future(s.get("s", "k"))
        await asyncio.sleep(0)  # issued (and timestamped) now ...
        clock.now += 11  # ... answered after the key expired
        assert (await before)["value"] == 1
        with pytest.raises(NotFound):
            await s.get("s", "k")


async def test_close_answers_gets_already_issued(db_path: Path) -> None:
    s = await StateStore.open(db_path)
    await s.set("s", "k", 1)
    pending = [asyncio.ensure_future(s.get("s", "k")) for _ in range(10)]
    await asyncio.sleep(0)
    await s.close()
    assert [(await p)["value"] for p in pending] == [1] * 10


# --------------------------------------------------------------------------- cancellation


def _slow_commits(store: StateStore, seconds: float) -> threading.Event:
    """Make every write batch take ``seconds`` longer; the event is set when one starts."""
    real = store._write_batch
    started = threading.Event()

    def slow(*a: Any) -> Any:
        started.set()
        time.sleep(seconds)
        return real(*a)

    store._write_batch = slow  # type: ignore[method-assign]
    return started


async def test_committer_cancelled_mid_commit_reports_the_real_outcome(db_path: Path) -> None:
    s = await StateStore.open(db_path, reap_interval=3600)
    started = _slow_commits(s, 0.2)
    task = asyncio.ensure_future(s.set("s", "k", 1))
    assert await asyncio.to_thread(started.wait, 5)
    assert s._committer is not None
    s._committer.cancel()
    res = await task  # committed on the database thread: acknowledged, not failed
    assert res["revision"] == 1 and s.revision == 1
    with pytest.raises(asyncio.CancelledError):
        await s._committer
    s._committer = None
    await s.close()
    async with await StateStore.open(db_path) as s2:
        assert (await s2.get("s", "k"))["value"] == 1


async def test_cancelled_committer_settles_writes_queued_behind_a_commit(db_path: Path) -> None:
    """Writes waiting behind a slow commit when the committer is cancelled: each is either
    acknowledged (and durable) or refused as not applied (and absent); none hangs."""
    s = await StateStore.open(db_path, reap_interval=3600, batch_max=4)
    started = _slow_commits(s, 0.1)
    tasks = [asyncio.ensure_future(s.set("s", f"k{i}", i)) for i in range(20)]
    assert await asyncio.to_thread(started.wait, 5)
    assert s._committer is not None
    s._committer.cancel()
    _done, pending = await asyncio.wait(tasks, timeout=10)
    assert not pending
    acked = {i for i, t in enumerate(tasks) if t.exception() is None}
    for i, t in enumerate(tasks):
        if i not in acked:
            assert isinstance(t.exception(), StorageError)
            assert "nothing was applied" in str(t.exception())
    # the batch on the writer's thread when the cancel came was committed; later ones refused
    assert 0 < len(acked) < 20
    s._committer = None
    await s.close()
    async with await StateStore.open(db_path) as s2:
        present = {i for i in range(20) if await _exists(s2, f"k{i}")}
    assert present == acked


async def _exists(store: StateStore, key: str) -> bool:
    try:
        await store.get("s", key)
    except NotFound:
        return False
    return True


TRICKY_VALUES: list[Any] = [
    'quote"d \\ back',
    "ünïcödé \U0001f600 \u2028",
    "ctl\x01\n\t\x7f",
    0.1,
    1e-7,
    -0.0,
    2**63 - 1,
    2**70,  # beyond 64 bits: encoded by the stdlib, still one JSON row
    {"nested": [1, None, True, {"k": "v"}]},
    None,
    "x" * 1000,
]


async def _raw_rows(path: Path, json_each: bool) -> tuple[list[Any], list[Any]]:
    clock = FakeClock()
    async with await StateStore.open(path, clock=clock, reap_interval=3600) as s:
        s._json_each = json_each
        ops = [
            {"op": "set", "scope": "v", "key": f"k{i}", "value": v}
            for i, v in enumerate(TRICKY_VALUES)
        ]
        await s.txn(ops)
        await s.txn(ops[:3])  # updates through ON CONFLICT
        await s.txn([{"op": "delete", "scope": "v", "key": "k4"}, *ops[5:7]])
    con = sqlite3.connect(path)
    try:
        kv = con.execute("SELECT * FROM kv ORDER BY scope, key").fetchall()
        changes = con.execute("SELECT * FROM changes ORDER BY revision, idx").fetchall()
    finally:
        con.close()
    return kv, changes


async def test_rows_written_from_one_json_parameter_are_bit_identical(tmp_path: Path) -> None:
    """Many-row txn writes go through one json_each statement; the stored rows (value text,
    revisions, float timestamps) must equal the row-by-row executemany path exactly."""
    fast = await _raw_rows(tmp_path / "fast.db", json_each=True)
    slow = await _raw_rows(tmp_path / "slow.db", json_each=False)
    assert fast == slow
    kv, changes = fast
    # create-scope + one set per value, then 3 updates, then 1 delete + 2 sets
    assert len(kv) == len(TRICKY_VALUES) - 1 and len(changes) == 1 + len(TRICKY_VALUES) + 3 + 3
    stored = {r[1]: json.loads(r[2]) for r in kv}
    assert stored == {f"k{i}": v for i, v in enumerate(TRICKY_VALUES) if i != 4}


async def _mixed_batch(path: Path, json_each: bool) -> tuple[list[Any], list[dict], list[Any]]:
    """One group-commit batch of standalone writes that depend on each other: each must see
    the writes before it in the same transaction (run with and without JSON1 paths)."""
    clock = FakeClock()
    async with await StateStore.open(path, clock=clock, reap_interval=3600) as s:
        s._json_each = json_each
        await s.set("p", "cas", 0)
        await s.set("p", "ttl", 0, ttl=5)
        await s.set("gone", "k", 0)
        clock.now += 6  # p/ttl has expired (not reaped: the batch's set must expire it)
        events: list[dict] = []
        s.add_listener(events.append)
        commits = s.commits
        gate = threading.Event()  # holds the writer's thread until every call is queued
        blocker = asyncio.ensure_future(dbthread.on_db_thread(s._writer, lambda _db: gate.wait(5)))
        calls = [
            s.set("p", "a", 1),
            s.set("p", "a", 2),  # same key again: sees the first write (version 2)
            s.set("p", "cas", 1, prev_revision=1),  # CAS on the prefetched state: ok
            s.set("p", "cas", 2, prev_revision=1),  # stale now: conflict
            s.delete("p", "a"),
            s.delete("p", "a"),  # already deleted in this batch: not found
            s.set("p", "ttl", 1),  # expired key: expiry first, then a new key (version 1)
            s.set("new", "x", 1),  # creates scope "new"
            s.set("new", "y", 2),  # scope now exists: no second create-scope
            s.delete_scope("gone"),
            s.set("gone", "k", 3, prev_revision=0),  # scope and key were just deleted: ok
            s.set("p", "b", 1, if_absent=True),
            s.set("p", "b", 2, if_absent=True),  # conflict: written just above
        ]
        tasks = [asyncio.ensure_future(c) for c in calls]
        for _ in range(100):
            if s.queue_depth == len(calls):
                break
            await asyncio.sleep(0.001)
        assert s.queue_depth == len(calls)
        gate.set()
        await blocker
        outcomes: list[Any] = []
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            outcomes.append(r.to_dict() if isinstance(r, Conflict | NotFound) else r)
        assert s.commits - commits == 1, "the calls must share one batch for this test"
        listing = [await s.list_keys(sc, include_values=True) for sc in ("p", "new", "gone")]
        return outcomes, events, listing


async def test_dependent_writes_in_one_batch(tmp_path: Path) -> None:
    fast = await _mixed_batch(tmp_path / "fast.db", json_each=True)
    slow = await _mixed_batch(tmp_path / "slow.db", json_each=False)
    assert fast == slow
    outcomes, events, _ = fast
    assert outcomes[1]["version"] == 2
    assert [o.get("code") for o in outcomes if "code" in o] == [
        "conflict",
        "not_found",
        "conflict",
    ]
    assert [e["op"] for e in events].count("create-scope") == 2  # "new", then "gone" again
    assert outcomes[6]["version"] == 1


async def test_close_while_drains_are_in_flight_acknowledges_every_write(db_path: Path) -> None:
    """close() arrives while commits are running and more writes wait: every write is
    acknowledged before close returns (none left pending behind the stop sentinel)."""
    s = await StateStore.open(db_path, reap_interval=3600, batch_max=3)
    _slow_commits(s, 0.02)
    tasks = [asyncio.ensure_future(s.set("s", f"k{i}", i)) for i in range(30)]
    await asyncio.sleep(0.03)  # the first drains are committing
    await asyncio.wait_for(s.close(), 10)
    assert all(t.done() for t in tasks)
    assert sorted(t.result()["revision"] for t in tasks)[-1] == 30
    async with await StateStore.open(db_path) as s2:
        assert s2.revision == 30
