"""Paged reads of the store (plantd.state.pages, plantd.state.counts) on real SQLite files:
pages cover everything exactly once, also while writes go on, totals stay exact through
every kind of write, and export pages equal the one-shot export."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plantd.state import StateStore
from tests.support.clock import FakeClock

pytestmark = pytest.mark.timeout(120)


async def _fill(store: StateStore, scope: str, keys: list[str], value: Any = 1) -> None:
    for i in range(0, len(keys), 128):
        await store.txn(
            [{"op": "set", "scope": scope, "key": k, "value": value} for k in keys[i : i + 128]]
        )


async def _all_keys(store: StateStore, scope: str, **kw: Any) -> tuple[list[str], int]:
    out: list[str] = []
    after, pages = None, 0
    while True:
        page = await store.list_keys_page(scope, after=after, **kw)
        pages += 1
        out += [k["key"] for k in page["keys"]]
        if not page["more"]:
            assert page["next"] is None
            return out, pages
        assert page["next"] == page["keys"][-1]["key"]
        after = page["next"]


async def _count(store: StateStore, scope: str) -> int:
    rows = await store._read("SELECT count(*) FROM kv WHERE scope=?", (scope,))
    return int(rows[0][0])


def test_key_pages_limit_bytes_prefix_glob_and_totals(db_path: Path) -> None:
    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            keys = [f"k{i:05d}" for i in range(2500)] + [f"p.{i}" for i in range(30)]
            await _fill(store, "s", keys)
            got, pages = await _all_keys(store, "s", limit=1000)
            assert got == sorted(keys) and pages == 3
            first = await store.list_keys_page("s", limit=10)
            assert first["total"] == 2530 and first["more"] and len(first["keys"]) == 10
            assert first["revision"] == store.revision
            assert "value" in first["keys"][0]
            bare = await store.list_keys_page("s", limit=10, include_values=False)
            assert "value" not in bare["keys"][0]
            # the byte budget cuts a page short and says more
            small = await store.list_keys_page("s", limit=1000, max_bytes=2000)
            assert 1 <= len(small["keys"]) < 20 and small["more"]
            got, _ = await _all_keys(store, "s", limit=1000, max_bytes=2000)
            assert got == sorted(keys)
            pref = await store.list_keys_page("s", prefix="p.")
            assert pref["total"] == 30 and len(pref["keys"]) == 30 and not pref["more"]
            glob = await store.list_keys_page("s", glob="k0000*")
            assert [k["key"] for k in glob["keys"]] == [f"k{i:05d}" for i in range(10)]
            assert glob["total"] is None
            both = await store.list_keys_page("s", prefix="k0", glob="*9", limit=5)
            assert [k["key"] for k in both["keys"]] == [f"k000{i}9" for i in range(5)]
            assert both["more"] and both["next"] == "k00049"

    asyncio.run(run())


def test_paging_is_stable_under_concurrent_writes(db_path: Path) -> None:
    """Keys inserted before and after the cursor while paging: every key that existed for
    the whole listing appears exactly once, and no key appears twice."""

    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            stable = [f"k{i:05d}" for i in range(0, 4000, 2)]
            await _fill(store, "s", stable)
            seen: list[str] = []
            after = None
            n = 0
            while True:
                page = await store.list_keys_page("s", after=after, limit=97)
                seen += [k["key"] for k in page["keys"]]
                if not page["more"]:
                    break
                after = page["next"]
                cursor = int(after[1:])
                n += 1
                # new keys just before and just after the cursor, and a deleted newcomer
                await store.txn(
                    [
                        {"op": "set", "scope": "s", "key": f"k{cursor - 1:05d}x", "value": n},
                        {"op": "set", "scope": "s", "key": f"k{cursor + 1:05d}", "value": n},
                        {"op": "set", "scope": "s", "key": f"a{n:05d}", "value": n},
                    ]
                )
            assert len(seen) == len(set(seen))
            assert set(stable) <= set(seen)
            assert seen == sorted(seen)
            assert all(not k.startswith("a") for k in seen)  # inserted behind the cursor

    asyncio.run(run())


def test_totals_follow_every_kind_of_write(db_path: Path) -> None:
    clock = FakeClock()

    async def run() -> None:
        store = await StateStore.open(db_path, clock=clock, reap_interval=3600)
        try:

            async def total(scope: str) -> int:
                return (await store.list_keys_page(scope, limit=1))["total"]

            await _fill(store, "a", [f"k{i}" for i in range(300)])
            assert await total("a") == 300 == await _count(store, "a")
            await store.set("a", "new", 1)
            await store.set("a", "k1", 2)  # an update: no change
            await store.delete("a", "k2")
            await store.txn(
                [
                    {"op": "set", "scope": "a", "key": "t1", "value": 1},
                    {"op": "delete", "scope": "a", "key": "k3"},
                    {"op": "set", "scope": "b", "key": "x", "value": 1},
                ]
            )
            assert await total("a") == 300 == await _count(store, "a")
            assert await total("b") == 1
            await store.set("a", "ttl", 1, ttl=5)
            clock.now += 10
            await store.reap_expired()
            assert await total("a") == 300 == await _count(store, "a")
            await store.set("a", "ttl2", 1, ttl=5)
            clock.now += 10
            await store.set("a", "ttl2", 2)  # the expired row goes, the new one comes
            assert await total("a") == 301 == await _count(store, "a")
            await store.import_json({"scopes": {"a": {"k1": 9, "imp": 1}, "c": {"z": 1}}})
            assert await total("a") == 302 == await _count(store, "a")
            assert await total("c") == 1
            await store.delete_scope("b")
            await store.set("b", "again", 1)
            assert await total("b") == 1
            scopes = await store.list_scopes_page()
            assert {d["scope"]: d["keys"] for d in scopes["details"]} == {
                "a": 302,
                "b": 1,
                "c": 1,
            }
            await store.import_json({"scopes": {"only": {"x": 1}}}, replace=True)
            assert await total("only") == 1
            assert (await store.list_scopes_page())["total"] == 1
        finally:
            await store.close()
        # reopened: counted again (in the background, or by the first listing)
        async with await StateStore.open(db_path, clock=clock) as again:
            assert (await again.list_keys_page("only"))["total"] == 1
            await again.set("only", "y", 2)
            assert (await again.list_keys_page("only"))["total"] == 2

    asyncio.run(run())


def test_scope_pages(db_path: Path) -> None:
    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            for i in range(25):
                await store.set(f"scope.{i:02d}", "k", i)
            await store.create_scope("other")
            names: list[str] = []
            after = None
            while True:
                page = await store.list_scopes_page(prefix="scope.", after=after, limit=10)
                assert page["total"] == 25
                names += [d["scope"] for d in page["details"]]
                assert all(d["keys"] == 1 for d in page["details"])
                if not page["more"]:
                    break
                after = page["next"]
            assert names == [f"scope.{i:02d}" for i in range(25)]

    asyncio.run(run())


def _merge(pages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for page in pages:
        for scope, kv in page["scopes"].items():
            out.setdefault(scope, {}).update(kv)
    return out


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_export_pages_equal_the_one_shot_export(db_path: Path, limit: int) -> None:
    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            for i in range(12):
                await store.create_scope(f"empty.{i:02d}")
            await _fill(store, "big", [f"k{i:03d}" for i in range(40)], {"v": 1})
            await store.set("mid", "only", [1, 2])
            whole = await store.export_json()
            paged: list[dict[str, Any]] = []
            after = None
            while True:
                page = await store.export_page(after=after, limit=limit, max_bytes=300)
                paged.append(page)
                if not page["more"]:
                    break
                nxt = page["next"]
                after = (nxt["scope"], nxt["key"])
            assert _merge(paged) == whole["scopes"]
            streamed = [p async for p in store.export_pages(limit=limit, max_bytes=300)]
            assert _merge(streamed) == whole["scopes"]
            assert {p["revision"] for p in streamed} == {whole["revision"]}
            assert list(_merge(streamed)) == sorted(whole["scopes"])

    asyncio.run(run())


def test_streamed_export_is_one_snapshot(db_path: Path) -> None:
    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            await _fill(store, "s", [f"k{i:04d}" for i in range(500)], 0)
            before = await store.export_json()
            pages = store.export_pages(limit=50)
            got = [await anext(pages)]
            await _fill(store, "s", [f"k{i:04d}" for i in range(500)], 1)  # rewrite all
            await store.set("s", "zzz", 1)
            got += [p async for p in pages]
            assert _merge(got) == before["scopes"]

    asyncio.run(run())


def test_large_file_opens_with_a_probe_instead_of_quick_check(db_path: Path) -> None:
    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            await store.set("s", "k", 1)
        async with await StateStore.open(db_path, verify_max_bytes=0) as store:
            assert (await store.get("s", "k"))["value"] == 1

    asyncio.run(run())


def test_counts_taken_while_writes_commit_stay_exact(db_path: Path) -> None:
    """The background count and first listings race with commits: no change is counted
    twice or missed (a count read at revision R takes only the deltas after R)."""

    async def run() -> None:
        async with await StateStore.open(db_path) as store:
            await _fill(store, "s", [f"k{i:05d}" for i in range(20_000)])
        for round_ in range(3):
            async with await StateStore.open(db_path) as store:

                async def writer(w: int, round_: int = round_) -> None:
                    for i in range(150):
                        await store.set("s", f"new{round_}.{w}.{i}", i)
                        if i % 3 == 0:
                            await store.delete("s", f"k{(w * 1000 + i + round_ * 97):05d}")

                async def lister() -> None:
                    for i in range(40):
                        if i % 2:  # an import makes the count unknown: the next page recounts
                            await store.import_json({"scopes": {"s": {f"imp{i}": i}}})
                        await store.list_keys_page("s", limit=5)

                await asyncio.gather(*(writer(w) for w in range(4)), lister())
                page = await store.list_keys_page("s", limit=1)
                assert page["total"] == await _count(store, "s")
                scopes = await store.list_scopes_page()
                assert scopes["details"][0]["keys"] == page["total"]

    asyncio.run(run())


def test_key_counts_take_only_the_deltas_after_the_snapshot() -> None:
    from plantd.state.counts import KeyCounts

    counts = KeyCounts()
    logs = counts.begin(["a", "b"])
    counts.adopt(5, {"a": 1}, False)  # committed before the snapshot at 6, adopted after begin
    counts.adopt(6, {"a": 2, "b": None}, False)
    counts.adopt(7, {"a": -1}, False)  # after the snapshot
    assert counts.install(logs, 6, {"a": 10, "b": 3}) == {"a": 9, "b": 3}
    assert counts.get("a") == 9 and counts.get("b") == 3
    logs = counts.begin(["c"])
    counts.adopt(8, {"c": None}, False)  # unknown after the snapshot: not kept
    assert counts.install(logs, 7, {"c": 4}) == {"c": 4} and counts.get("c") is None
    counts.adopt(9, {}, True)
    assert counts.get("a") is None
