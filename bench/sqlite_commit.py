"""Durable commit throughput: plain sqlite3 single-row commits vs. group-committed store sets.

Same pragmas as the store (WAL, synchronous=FULL). Prints numbers only; no assertions.
Also measures ``txn`` batches (key-writes/s) and ``get``/s with 1 and N concurrent readers.
Usage: python bench/sqlite_commit.py [--seconds 2] [--writers 32] [--txn-keys 100]
       [--dir /path/on/target/disk]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from _common import plain_sqlite

from plantd.state import StateStore


async def store_sets(path: Path, seconds: float, writers: int) -> tuple[float, float, int]:
    """``writers`` tasks each doing awaited sets back to back; returns sets/s, ops/commit."""
    store = await StateStore.open(path)
    stop = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(i: int) -> None:
        while time.perf_counter() < stop:
            await store.set("bench", f"w{i}-{counts[i] % 100}", {"v": counts[i]})
            counts[i] += 1

    start = time.perf_counter()
    commits0 = store.commits
    await asyncio.gather(*(writer(i) for i in range(writers)))
    elapsed = time.perf_counter() - start
    total, commits = sum(counts), store.commits - commits0
    await store.close()
    return total / elapsed, total / max(commits, 1), commits


async def store_txns(path: Path, seconds: float, writers: int, keys: int) -> tuple[float, float]:
    """``writers`` tasks each committing txns of ``keys`` sets; returns key-writes/s, txns/s."""
    store = await StateStore.open(path)
    stop = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(i: int) -> None:
        while time.perf_counter() < stop:
            n = counts[i]
            await store.txn(
                [
                    {"op": "set", "scope": "bench", "key": f"w{i}-{k}", "value": {"v": n}}
                    for k in range(keys)
                ]
            )
            counts[i] += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    elapsed = time.perf_counter() - start
    await store.close()
    return sum(counts) * keys / elapsed, sum(counts) / elapsed


async def store_gets(path: Path, seconds: float, readers: int, keys: int = 1000) -> float:
    """``readers`` tasks each doing awaited gets of existing keys back to back; gets/s."""
    store = await StateStore.open(path)
    for base in range(0, keys, 100):
        await store.txn(
            [
                {"op": "set", "scope": "bench", "key": f"k{k}", "value": {"v": k, "s": "x" * 40}}
                for k in range(base, min(base + 100, keys))
            ]
        )
    stop = time.perf_counter() + seconds
    counts = [0] * readers

    async def reader(i: int) -> None:
        n = i
        while time.perf_counter() < stop:
            await store.get("bench", f"k{n % keys}")
            n += 7
            counts[i] += 1

    start = time.perf_counter()
    await asyncio.gather(*(reader(i) for i in range(readers)))
    elapsed = time.perf_counter() - start
    await store.close()
    return sum(counts) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--txn-keys", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        plain = plain_sqlite(Path(d) / "plain.db", args.seconds)
        print(f"sqlite {sqlite3.sqlite_version}, WAL, synchronous=FULL, dir {d}")
        print(f"plain sqlite3, 1 row per durable commit: {plain:10.0f} commits/s")
        for writers in (1, args.writers):
            rate, per_commit, commits = asyncio.run(
                store_sets(Path(d) / f"store{writers}.db", args.seconds, writers)
            )
            print(
                f"StateStore.set, {writers:3d} concurrent writers: {rate:10.0f} sets/s"
                f"  ({per_commit:.1f} sets per commit, {commits} commits)"
            )
        for writers in (1, 8):
            kw, txns = asyncio.run(
                store_txns(Path(d) / f"txn{writers}.db", args.seconds, writers, args.txn_keys)
            )
            print(
                f"StateStore.txn ({args.txn_keys} keys), {writers:3d} writers: {kw:10.0f}"
                f" key-writes/s  ({txns:.0f} txns/s)"
            )
        for readers in (1, args.writers):
            rate = asyncio.run(store_gets(Path(d) / f"get{readers}.db", args.seconds, readers))
            print(f"StateStore.get, {readers:3d} concurrent readers: {rate:10.0f} gets/s")


if __name__ == "__main__":
    main()
