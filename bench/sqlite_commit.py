"""Durable commit throughput: plain sqlite3 single-row commits vs. group-committed store sets.

Same pragmas as the store (WAL, synchronous=FULL). Prints numbers only; no assertions.
Usage: python bench/sqlite_commit.py [--seconds 2] [--writers 32] [--dir /path/on/target/disk]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from plantd.state import StateStore


def plain_sqlite(path: Path, seconds: float) -> float:
    """One INSERT + COMMIT per row: what every write costs without batching."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR REPLACE INTO kv VALUES(?, ?)", (f"k{n % 1000}", '{"v":1}'))
        con.execute("COMMIT")
        n += 1
    con.close()
    return n / elapsed


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--writers", type=int, default=32)
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


if __name__ == "__main__":
    main()
