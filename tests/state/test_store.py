"""StateStore against real SQLite files: revisions, CAS, txn, TTL, idempotency, group commit,
change history, limits, locking, corruption, backup/restore and storage errors."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plantd.state import (
    Compacted,
    Conflict,
    CorruptDatabase,
    InvalidArgument,
    LimitExceeded,
    Limits,
    NotFound,
    StateError,
    StateStore,
    StorageError,
    StoreLocked,
)
from tests.support.clock import FakeClock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(db_path: Path):
    s = await StateStore.open(db_path, reap_interval=0.05)
    yield s
    await s.close()


def read_bytes(p: Path) -> bytes:
    return p.read_bytes()


def write_bytes(p: Path, data: bytes) -> None:
    p.write_bytes(data)


def exists(p: Path) -> bool:
    return p.exists()


def _run_py(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )


# --------------------------------------------------------------------------- basics


async def test_revisions_versions_like_etcd(store: StateStore) -> None:
    r1 = await store.set("s", "k", {"a": 1})
    assert (r1["revision"], r1["create_revision"], r1["mod_revision"], r1["version"]) == (
        1,
        1,
        1,
        1,
    )
    r2 = await store.set("s", "k", [1, 2])
    assert (r2["revision"], r2["create_revision"], r2["version"]) == (2, 1, 2)
    got = await store.get("s", "k")
    assert got["value"] == [1, 2]
    assert (got["create_revision"], got["mod_revision"], got["version"]) == (1, 2, 2)
    assert got["revision"] == 2 and got["updated"] > 0 and got["expires"] is None
    d = await store.delete("s", "k")
    assert d["revision"] == 3 and d["prev_mod_revision"] == 2
    r4 = await store.set("s", "k", None)  # JSON null is a value
    assert (r4["revision"], r4["create_revision"], r4["version"]) == (4, 4, 1)
    assert (await store.get("s", "k"))["value"] is None
    assert store.revision == 4


async def test_any_json_value_round_trips(store: StateStore) -> None:
    values = ["", "héllo ✓", 0, -1.5, True, False, None, [], {}, {"n": [1, {"x": None}]}]
    for i, v in enumerate(values):
        await store.set("s", f"k{i}", v)
    for i, v in enumerate(values):
        assert (await store.get("s", f"k{i}"))["value"] == v
    with pytest.raises(InvalidArgument, match="JSON"):
        await store.set("s", "bad", float("nan"))
    with pytest.raises(InvalidArgument, match="JSON"):
        await store.set("s", "bad", {1, 2})


async def test_missing_key_and_scope_raise_not_found(store: StateStore) -> None:
    with pytest.raises(NotFound, match="scope 'nope' not found") as e:
        await store.get("nope", "k")
    assert e.value.to_dict()["code"] == "not_found"
    await store.create_scope("s")
    with pytest.raises(NotFound, match="key 'k' not found in scope 's'"):
        await store.get("s", "k")
    with pytest.raises(NotFound):
        await store.delete("s", "k")
    with pytest.raises(NotFound):
        await store.delete_scope("nope")
    with pytest.raises(NotFound):
        await store.list_keys("nope")
    assert store.revision == 1  # failures change nothing


async def test_lists_are_empty_lists(store: StateStore) -> None:
    assert await store.list_scopes() == []
    res = await store.create_scope("s")
    assert res["created"] is True and res["revision"] == 1
    again = await store.create_scope("s")  # idempotent, no new revision
    assert again["created"] is False and store.revision == 1
    assert await store.list_keys("s") == []
    assert await store.list_scopes() == [{"scope": "s", "create_revision": 1, "keys": 0}]
    assert await store.changes_since(store.revision) == []


async def test_set_into_missing_scope_creates_it_in_the_same_revision(store: StateStore) -> None:
    events: list[dict] = []
    store.add_listener(events.append)
    res = await store.set("new", "k", 1)
    assert res["revision"] == 1
    assert [(e["op"], e["scope"], e["key"], e["revision"]) for e in events] == [
        ("create-scope", "new", None, 1),
        ("set", "new", "k", 1),
    ]
    assert [s["scope"] for s in await store.list_scopes()] == ["new"]


async def test_list_keys_sorted_with_prefix_and_values(store: StateStore) -> None:
    for k in ["b/2", "a", "b/1", "c"]:
        await store.set("s", k, k.upper())
    keys = await store.list_keys("s")
    assert [k["key"] for k in keys] == ["a", "b/1", "b/2", "c"]
    assert "value" not in keys[0] and keys[0]["version"] == 1
    pref = await store.list_keys("s", prefix="b/", include_values=True)
    assert [(k["key"], k["value"]) for k in pref] == [("b/1", "B/1"), ("b/2", "B/2")]
    assert await store.list_keys("s", prefix="zz") == []


async def test_delete_scope_one_event_and_keys_gone(store: StateStore) -> None:
    await store.set("s", "a", 1)
    await store.set("s", "b", 2)
    events: list[dict] = []
    store.add_listener(events.append)
    res = await store.delete_scope("s")
    assert res == {"scope": "s", "revision": 3, "deleted_keys": 2}
    assert [(e["op"], e["key"], e["revision"]) for e in events] == [("delete-scope", None, 3)]
    assert await store.list_scopes() == []
    # recreating the scope and a key starts the key's life over
    r = await store.set("s", "a", 9)
    assert (r["create_revision"], r["version"]) == (4, 1)


# --------------------------------------------------------------------------- CAS / txn


async def test_compare_and_set(store: StateStore) -> None:
    r = await store.set("s", "k", 1, prev_revision=0)  # 0 = must not exist
    with pytest.raises(Conflict) as e:
        await store.set("s", "k", 2, prev_revision=0)
    assert e.value.current_revision == r["mod_revision"] == 1
    assert e.value.to_dict() == {
        "success": False,
        "error": e.value.message,
        "code": "conflict",
        "current_revision": 1,
        "scope": "s",
        "key": "k",
    }
    with pytest.raises(Conflict) as e:
        await store.set("s", "k", 2, if_absent=True)
    assert e.value.current_revision == 1
    with pytest.raises(Conflict, match="expected mod_revision 7, current is 1"):
        await store.set("s", "k", 2, prev_revision=7)
    r2 = await store.set("s", "k", 2, prev_revision=1)
    assert r2["mod_revision"] == 2
    with pytest.raises(Conflict) as e:
        await store.delete("s", "k", prev_revision=1)
    assert e.value.current_revision == 2
    await store.delete("s", "k", prev_revision=2)
    with pytest.raises(Conflict) as e:  # absent key: current revision 0
        await store.set("s", "k", 3, prev_revision=2)
    assert e.value.current_revision == 0
    assert (await store.set("s", "k", 3, if_absent=True))["version"] == 1
    with pytest.raises(InvalidArgument):
        await store.set("s", "k", 3, if_absent=True, prev_revision=4)
    with pytest.raises(InvalidArgument):
        await store.delete("s", "k", prev_revision=0)
    with pytest.raises(InvalidArgument):
        await store.set("s", "k", 3, prev_revision=-1)


async def test_txn_is_one_revision_and_all_or_nothing(store: StateStore) -> None:
    await store.set("s", "a", 1)  # rev 1
    await store.set("s", "b", 2)  # rev 2
    events: list[dict] = []
    store.add_listener(events.append)
    with pytest.raises(Conflict) as e:
        await store.txn(
            [
                {"op": "set", "scope": "s", "key": "a", "value": 10, "prev_revision": 1},
                {"op": "set", "scope": "t", "key": "x", "value": 1},
                {"op": "delete", "scope": "s", "key": "b", "prev_revision": 99},
            ]
        )
    assert e.value.extra["index"] == 2 and e.value.current_revision == 2
    assert store.revision == 2 and events == []
    assert (await store.get("s", "a"))["value"] == 1
    assert [s["scope"] for s in await store.list_scopes()] == ["s"]
    with pytest.raises(NotFound):  # deleting a missing key fails the txn too
        await store.txn(
            [
                {"op": "set", "scope": "s", "key": "a", "value": 10},
                {"op": "delete", "scope": "s", "key": "zz"},
            ]
        )
    assert store.revision == 2

    res = await store.txn(
        [
            {"op": "check", "scope": "s", "key": "ghost", "if_absent": True},
            {"op": "set", "scope": "s", "key": "a", "value": 10, "prev_revision": 1},
            {"op": "set", "scope": "t", "key": "x", "value": 1, "if_absent": True},
            {"op": "delete", "scope": "s", "key": "b"},
        ]
    )
    assert res["revision"] == 3 and store.revision == 3
    assert [r.get("revision") for r in res["results"]] == [None, 3, 3, 3]
    assert {e["revision"] for e in events} == {3}
    assert [(e["op"], e["scope"], e["key"]) for e in events] == [
        ("set", "s", "a"),
        ("create-scope", "t", None),
        ("set", "t", "x"),
        ("delete", "s", "b"),
    ]


async def test_txn_validation(store: StateStore) -> None:
    with pytest.raises(InvalidArgument, match="at least one"):
        await store.txn([])
    with pytest.raises(InvalidArgument, match="duplicate key"):
        await store.txn(
            [
                {"op": "set", "scope": "s", "key": "a", "value": 1},
                {"op": "delete", "scope": "s", "key": "a"},
            ]
        )
    with pytest.raises(InvalidArgument, match="op must be"):
        await store.txn([{"op": "frob", "scope": "s", "key": "a"}])
    with pytest.raises(InvalidArgument, match="unknown fields"):
        await store.txn([{"op": "set", "scope": "s", "key": "a", "value": 1, "tll": 3}])
    ops = [{"op": "set", "scope": "s", "key": f"k{i}", "value": i} for i in range(129)]
    with pytest.raises(LimitExceeded, match="max_txn_ops is 128, got 129"):
        await store.txn(ops)
    assert store.revision == 0


# --------------------------------------------------------------------------- limits


async def test_limits_name_the_limit_and_size(db_path: Path) -> None:
    limits = Limits(max_scope_length=8, max_key_length=10, max_value_bytes=20, max_txn_ops=2)
    async with await StateStore.open(db_path, limits=limits) as s:
        with pytest.raises(LimitExceeded) as e:
            await s.set("s", "k" * 11, 1)
        assert e.value.to_dict()["limit"] == "max_key_length"
        assert (e.value.maximum, e.value.actual) == (10, 11)
        with pytest.raises(LimitExceeded, match="max_value_bytes is 20, got 22"):
            await s.set("s", "k", "x" * 20)  # JSON-encoded: 20 + 2 quotes
        with pytest.raises(LimitExceeded, match="max_value_bytes is 20, got 21"):
            await s.set("s", "k", "é" * 9 + "x")  # UTF-8 bytes, not characters
        with pytest.raises(LimitExceeded, match="max_scope_length is 8, got 9"):
            await s.create_scope("s" * 9)
        with pytest.raises(LimitExceeded, match="max_txn_ops"):
            await s.txn([{"op": "set", "scope": "s", "key": f"{i}", "value": 1} for i in range(3)])
        with pytest.raises(InvalidArgument, match="non-empty"):
            await s.set("s", "", 1)
        with pytest.raises(InvalidArgument):
            await s.set("s", 5, 1)  # type: ignore[arg-type]
        assert s.revision == 0 and await s.list_scopes() == []


# --------------------------------------------------------------------------- TTL


async def test_expired_keys_are_invisible_before_the_reaper(db_path: Path) -> None:
    clock = FakeClock()
    async with await StateStore.open(db_path, clock=clock, reap_interval=3600) as s:
        events: list[dict] = []
        s.add_listener(events.append)
        await s.set("s", "k", 1, ttl=10)  # rev 1 (+create-scope)
        await s.set("s", "keep", 2)  # rev 2
        got = await s.get("s", "k")
        assert got["expires"] == pytest.approx(clock.now + 10)
        clock.now += 11
        with pytest.raises(NotFound):
            await s.get("s", "k")
        assert [k["key"] for k in await s.list_keys("s")] == ["keep"]
        assert (await s.export_json())["scopes"] == {"s": {"keep": 2}}
        assert await s.list_scopes() == [{"scope": "s", "create_revision": 1, "keys": 1}]
        with pytest.raises(Conflict) as e:  # an expired key compares as absent
            await s.set("s", "k", 5, prev_revision=1)
        assert e.value.current_revision == 0
        events.clear()
        assert await s.reap_expired() == 1
        assert events == [
            {
                "scope": "s",
                "key": "k",
                "op": "delete",
                "value": None,
                "revision": 3,
                "ts": clock.now,
            }
        ]
        assert s.revision == 3


async def test_set_on_expired_key_commits_the_expiry_first(db_path: Path) -> None:
    clock = FakeClock()
    async with await StateStore.open(db_path, clock=clock, reap_interval=3600) as s:
        await s.set("s", "k", 1, ttl=5)
        clock.now += 6
        events: list[dict] = []
        s.add_listener(events.append)
        r = await s.set("s", "k", 2, if_absent=True)
        assert (r["revision"], r["create_revision"], r["version"]) == (3, 3, 1)
        assert [(e["op"], e["revision"]) for e in events] == [("delete", 2), ("set", 3)]
        # a set without ttl clears the expiry
        clock.now += 1000
        assert (await s.get("s", "k"))["expires"] is None


async def test_reaper_deletes_expired_keys_and_publishes(store: StateStore) -> None:
    events: list[dict] = []
    store.add_listener(events.append)
    await store.set("s", "k", "v", ttl=0.1)
    for _ in range(100):
        if any(e["op"] == "delete" for e in events):
            break
        await asyncio.sleep(0.02)
    deletes = [e for e in events if e["op"] == "delete"]
    assert deletes and deletes[0]["key"] == "k" and deletes[0]["revision"] == 2
    hist = await store.changes_since(1)
    assert [(e["op"], e["key"]) for e in hist] == [("delete", "k")]


async def test_reaper_work_is_bounded_per_pass(db_path: Path) -> None:
    clock = FakeClock()
    async with await StateStore.open(db_path, clock=clock, reap_interval=3600, reap_batch=10) as s:
        await s.txn(
            [{"op": "set", "scope": "s", "key": f"k{i}", "value": i, "ttl": 1} for i in range(25)]
        )
        clock.now += 2
        commits = s.commits
        assert await s.reap_expired() == 25
        assert s.commits - commits == 3  # 10 + 10 + 5: three bounded transactions
        assert s.revision == 1 + 25  # each expiry is its own revision
        with pytest.raises(LimitExceeded, match="max_ttl"):
            await s.set("s", "k", 1, ttl=1e12)
        with pytest.raises(InvalidArgument):
            await s.set("s", "k", 1, ttl=0)


# --------------------------------------------------------------------------- idempotency


async def test_request_id_applies_once(db_path: Path) -> None:
    async with await StateStore.open(db_path) as s:
        first = await s.set("s", "k", 1, request_id="req-1")
        again = await s.set("s", "k", 1, request_id="req-1")
        assert again == first and s.revision == 1
        # concurrent duplicates in one batch
        a, b = await asyncio.gather(
            s.set("s", "k", 2, request_id="req-2"), s.set("s", "k", 2, request_id="req-2")
        )
        assert a == b and s.revision == 2
        # a stored failure replays even though the request would now succeed
        with pytest.raises(Conflict):
            await s.set("s", "x", 1, prev_revision=5, request_id="req-3")
        await s.set("s", "x", 0)
        await s.set("s", "x", 0)  # x now has mod_revision... not 5, but replay never re-runs
        with pytest.raises(Conflict):
            await s.set("s", "x", 1, prev_revision=5, request_id="req-3")
        with pytest.raises(InvalidArgument, match="already used for a different request"):
            await s.set("s", "k", 99, request_id="req-1")
        txn = [{"op": "delete", "scope": "s", "key": "x"}]
        t1 = await s.txn(txn, request_id="req-4")
        assert await s.txn(txn, request_id="req-4") == t1
        rev = s.revision
    async with await StateStore.open(db_path) as s:  # the mapping is durable
        assert await s.set("s", "k", 1, request_id="req-1") == first
        assert s.revision == rev


async def test_request_table_is_bounded(db_path: Path) -> None:
    async with await StateStore.open(db_path, request_history=5) as s:
        for i in range(12):
            await s.set("s", "k", i, request_id=f"r{i}")
        rows = await s._read("SELECT request_id FROM requests ORDER BY seq")
        assert [r[0] for r in rows] == [f"r{i}" for i in range(7, 12)]


# --------------------------------------------------------------------------- group commit


async def test_group_commit_batches_concurrent_writes(store: StateStore) -> None:
    before = store.commits
    results = await asyncio.gather(*(store.set("g", f"k{i}", i) for i in range(100)))
    commits = store.commits - before
    assert commits <= 10, commits
    assert sorted(r["revision"] for r in results) == list(range(1, 101))
    assert len(await store.list_keys("g")) == 100


async def test_failing_op_does_not_fail_its_batch(store: StateStore) -> None:
    await store.set("s", "k", 0)
    coros = [store.set("s", f"ok{i}", i) for i in range(20)]
    coros.insert(7, store.set("s", "k", 1, prev_revision=42))
    coros.insert(12, store.delete("s", "missing"))
    results = await asyncio.gather(*coros, return_exceptions=True)
    assert isinstance(results[7], Conflict) and isinstance(results[12], NotFound)
    assert sum(isinstance(r, dict) for r in results) == 20
    assert store.revision == 21


async def test_listener_order_and_async_listener(store: StateStore) -> None:
    seen: list[int] = []

    async def slow(event: dict) -> None:
        await asyncio.sleep(0)
        seen.append(event["revision"])

    def broken(event: dict) -> None:
        raise RuntimeError("listener bug must not break the store")

    store.add_listener(broken)
    store.add_listener(slow)
    await asyncio.gather(*(store.set("s", f"k{i}", i) for i in range(30)))
    assert seen == sorted(seen) and seen[-1] == 30
    store.remove_listener(slow)
    await store.set("s", "z", 1)
    assert seen[-1] == 30


# --------------------------------------------------------------------------- history


async def test_changes_since_replays_in_order(store: StateStore) -> None:
    await store.set("s", "a", 1)
    await store.txn(
        [
            {"op": "set", "scope": "s", "key": "b", "value": 2},
            {"op": "delete", "scope": "s", "key": "a"},
        ]
    )
    await store.delete_scope("s")
    hist = await store.changes_since(0)
    assert [(e["revision"], e["op"], e["key"], e["value"]) for e in hist] == [
        (1, "create-scope", None, None),
        (1, "set", "a", 1),
        (2, "set", "b", 2),
        (2, "delete", "a", None),
        (3, "delete-scope", None, None),
    ]
    assert await store.changes_since(2) == hist[-1:]
    assert await store.changes_since(99) == []
    # limit never splits a revision
    assert [e["revision"] for e in await store.changes_since(0, limit=3)] == [1, 1, 2, 2]
    with pytest.raises(InvalidArgument):
        await store.changes_since(-1)


async def test_compacted_history(db_path: Path) -> None:
    async with await StateStore.open(db_path, history_size=10) as s:
        await s.create_scope("s")
        for i in range(30):
            await s.set("s", "k", i)
        assert s.revision == 31
        hist = await s.changes_since(21)
        assert [e["revision"] for e in hist] == list(range(22, 32))
        with pytest.raises(Compacted) as e:
            await s.changes_since(20)
        assert e.value.to_dict()["oldest_revision"] == 22
        assert e.value.compact_revision == 21
        # a txn bigger than the history is dropped whole, never half-kept
        await s.txn([{"op": "set", "scope": "s", "key": f"t{i}", "value": i} for i in range(12)])
        with pytest.raises(Compacted):
            await s.changes_since(31)
        assert await s.changes_since(32) == []
    async with await StateStore.open(db_path, history_size=10) as s:
        with pytest.raises(Compacted):  # compaction point survives restart
            await s.changes_since(31)


# --------------------------------------------------------------------------- persistence


async def test_restart_persistence(db_path: Path) -> None:
    async with await StateStore.open(db_path) as s:
        await s.set("a", "k", {"v": 1})
        await s.set("a", "k", {"v": 2})
        await s.set("b", "x", "y")
    async with await StateStore.open(db_path) as s:
        got = await s.get("a", "k")
        assert got["value"] == {"v": 2} and got["version"] == 2 and got["revision"] == 3
        assert s.revision == 3
        assert (await s.set("b", "x", "z"))["revision"] == 4
        assert len(await s.changes_since(0)) == 6
        h = await s.health()
        assert h["status"] == "pass" and h["sqlite_version"] == sqlite3.sqlite_version
        assert (h["revision"], h["scopes"], h["keys"]) == (4, 2, 2)
    mode = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_crashed_process_data_survives(db_path: Path) -> None:
    proc = _run_py(
        f"""
        import asyncio, os
        from plantd.state import StateStore
        async def main():
            s = await StateStore.open({str(db_path)!r})
            for i in range(20):
                await s.set("s", f"k{{i}}", i)
            os._exit(0)  # acknowledged writes, no close, no checkpoint
        asyncio.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    async with await StateStore.open(db_path) as s:
        assert s.revision == 20
        assert (await s.get("s", "k19"))["value"] == 19


# --------------------------------------------------------------------------- refusals


async def test_second_open_is_refused(store: StateStore, db_path: Path) -> None:
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}") as e:
        await StateStore.open(db_path)
    assert e.value.code == "locked" and e.value.pid == os.getpid()
    proc = _run_py(
        f"""
        import asyncio
        from plantd.state import StateStore, StoreLocked
        try:
            asyncio.run(StateStore.open({str(db_path)!r}))
        except StoreLocked as e:
            print("LOCKED", e.pid)
        """
    )
    assert proc.stdout.split() == ["LOCKED", str(os.getpid())], proc.stderr
    await store.set("s", "k", 1)  # the holder is unaffected


async def test_lock_released_on_close(db_path: Path) -> None:
    s = await StateStore.open(db_path)
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await s.set("s", "k", 1)
    async with await StateStore.open(db_path) as s2:
        assert s2.revision == 0


async def test_close_drains_queued_writes(db_path: Path) -> None:
    s = await StateStore.open(db_path)
    tasks = [asyncio.create_task(s.set("s", f"k{i}", i)) for i in range(50)]
    await asyncio.sleep(0)  # all enqueued, none committed yet
    await s.close()
    assert all(t.result()["revision"] >= 1 for t in tasks)  # acknowledged = durable
    async with await StateStore.open(db_path) as s2:
        assert s2.revision == 50


async def test_garbage_file_is_refused_and_untouched(db_path: Path) -> None:
    garbage = os.urandom(8192)
    write_bytes(db_path, garbage)
    with pytest.raises(CorruptDatabase, match="not an SQLite database") as e:
        await StateStore.open(db_path)
    assert e.value.code == "corrupt"
    assert read_bytes(db_path) == garbage
    assert not exists(db_path.with_name(db_path.name + "-wal"))
    # the lock was released: a later attempt fails the same way, not with StoreLocked
    with pytest.raises(CorruptDatabase):
        await StateStore.open(db_path)


async def test_header_ok_but_damaged_file_is_refused(db_path: Path) -> None:
    async with await StateStore.open(db_path) as s:
        await s.txn(
            [{"op": "set", "scope": "s", "key": f"k{i}", "value": "x" * 500} for i in range(100)]
        )
    data = bytearray(read_bytes(db_path))
    page = int.from_bytes(data[16:18], "big")
    data[page * 2 : page * 4] = os.urandom(page * 2)  # scribble over b-tree pages
    write_bytes(db_path, bytes(data))
    with pytest.raises(CorruptDatabase, match="refusing to open"):
        await StateStore.open(db_path)
    assert read_bytes(db_path) == bytes(data)


async def test_truncated_db_is_refused_and_untouched(db_path: Path) -> None:
    async with await StateStore.open(db_path) as s:
        await s.txn(
            [{"op": "set", "scope": "s", "key": f"k{i}", "value": "x" * 500} for i in range(100)]
        )
    data = read_bytes(db_path)
    cut = data[: len(data) // 2]
    write_bytes(db_path, cut)
    with pytest.raises(CorruptDatabase, match="truncated"):
        await StateStore.open(db_path)
    assert read_bytes(db_path) == cut


async def test_foreign_sqlite_db_is_refused(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE users(id INTEGER)")
    con.commit()
    con.close()
    before = read_bytes(db_path)
    with pytest.raises(CorruptDatabase, match="not a plantd state store"):
        await StateStore.open(db_path)
    assert read_bytes(db_path) == before


# --------------------------------------------------------------------------- backup / restore


async def test_backup_while_writing_and_restore(tmp_path: Path, db_path: Path) -> None:
    backup = tmp_path / "backup.db"
    s = await StateStore.open(db_path)
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set():
            await asyncio.gather(*(s.set("w", f"k{n + i}", n + i) for i in range(8)))
            n += 8
        return n

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    info = await s.backup(backup)
    await asyncio.sleep(0.05)
    stop.set()
    written = await task
    assert 0 < info["revision"] < s.revision  # a snapshot taken while writes went on
    with pytest.raises(InvalidArgument, match="exists"):
        await s.backup(backup)
    with pytest.raises(StoreLocked):  # restore is offline only
        StateStore.restore(backup, db_path)
    await s.close()
    assert not exists(tmp_path / "backup.db-wal")  # self-contained single file

    res = StateStore.restore(backup, db_path)
    assert res["revision"] == info["revision"] and res["previous"]
    assert exists(Path(res["previous"]))  # the replaced database is kept
    async with await StateStore.open(db_path) as s2:
        assert s2.revision == info["revision"]
        keys = await s2.list_keys("w")
        # consistent snapshot: exactly the keys of revisions 1..revision (one key per set)
        assert len(keys) == info["revision"] < written
        assert (await s2.get("w", "k0"))["value"] == 0
        assert len(await s2.changes_since(0)) == info["revision"] + 1


async def test_restore_refuses_bad_backups(tmp_path: Path, db_path: Path) -> None:
    async with await StateStore.open(db_path) as s:
        await s.set("s", "k", 1)
    before = read_bytes(db_path)
    bad = tmp_path / "bad.db"
    write_bytes(bad, b"not a database at all" * 100)
    with pytest.raises(CorruptDatabase):
        StateStore.restore(bad, db_path)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(CorruptDatabase, match="not a plantd state backup"):
        StateStore.restore(foreign, db_path)
    with pytest.raises(InvalidArgument):
        StateStore.restore(tmp_path / "missing.db", db_path)
    assert read_bytes(db_path) == before


async def test_export_import_round_trip(tmp_path: Path, store: StateStore) -> None:
    await store.set("a", "k", {"x": [1, 2]})
    await store.set("a", "n", None)
    await store.create_scope("empty")
    doc = await store.export_json()
    assert doc["scopes"] == {"a": {"k": {"x": [1, 2]}, "n": None}, "empty": {}}
    doc = json.loads(json.dumps(doc))  # what the CLI writes and reads back
    async with await StateStore.open(tmp_path / "other.db") as other:
        await other.set("a", "k", "old")
        await other.set("zzz", "k", 1)
        events: list[dict] = []
        other.add_listener(events.append)
        res = await other.import_json(doc)
        assert res == {"revision": 3, "scopes": 2, "keys": 2}
        assert {e["revision"] for e in events} == {3}
        assert (await other.get("a", "k"))["version"] == 2  # update of an existing key
        assert (await other.export_json())["scopes"]["zzz"] == {"k": 1}
        await other.import_json(doc, replace=True)
        assert (await other.export_json())["scopes"] == doc["scopes"]
        with pytest.raises(InvalidArgument):
            await other.import_json({"nope": 1})


# --------------------------------------------------------------------------- storage errors


async def test_full_database_raises_storage_error_and_recovers(store: StateStore) -> None:
    await store.set("s", "k", "before")
    pages = (await store._writer.execute_fetchall("PRAGMA page_count"))[0][0]
    await store._writer.execute(f"PRAGMA max_page_count={pages}")
    ok = store.set("s", "small", 1)
    big = [store.set("s", f"big{i}", "x" * 100_000) for i in range(3)]
    results = await asyncio.gather(ok, *big, return_exceptions=True)
    errs = [r for r in results if isinstance(r, StorageError)]
    assert errs, results
    assert "full" in errs[0].message and errs[0].code == "storage_error"
    assert errs[0].to_dict()["cause"] == "SQLITE_FULL"
    rev = store.revision
    # reads keep working and see only committed data
    assert (await store.get("s", "k"))["value"] == "before"
    with pytest.raises(NotFound):
        await store.get("s", "big0")
    assert (await store.health())["last_error"]
    await store._writer.execute("PRAGMA max_page_count=1073741823")
    r = await store.set("s", "big0", "x" * 100_000)
    assert r["revision"] == rev + 1
    assert (await store.health())["status"] == "pass"
    assert [e["revision"] for e in await store.changes_since(rev)] == [rev + 1]


def test_error_dicts_round_trip() -> None:
    err = Conflict("compare failed", current_revision=7, scope="s", key="k")
    doc = err.to_dict()
    assert doc == {
        "success": False,
        "error": "compare failed",
        "code": "conflict",
        "current_revision": 7,
        "scope": "s",
        "key": "k",
    }
    back = StateError.from_dict(doc)
    assert isinstance(back, Conflict) and back.current_revision == 7 and str(back) == doc["error"]
    c = Compacted("gone", compact_revision=4)
    assert (c.to_dict()["oldest_revision"], c.code) == (5, "compacted")
    assert isinstance(StateError.from_dict({"code": "weird", "error": "x"}), StateError)
    codes = {k.code for k in (NotFound, Conflict, Compacted, LimitExceeded, InvalidArgument)}
    assert codes == {"not_found", "conflict", "compacted", "limit_exceeded", "invalid_argument"}
    assert StorageError("x").code == "storage_error"
