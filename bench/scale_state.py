"""Cost curves of the state service from 10^3 to 10^6 keys (issue 10).

Run: ``python bench/scale_state.py [--max-keys 1000000] [--seconds 3] [--dir DIR]``.

For each size, with all keys in ONE scope and spread over 1,000 scopes, it builds a database,
starts a real state daemon on it behind a real broker (random ports, temporary
PLANTD_HOME on ``--dir``) and measures:

* single ``state-get`` p50/p99 (sequential, random keys) and ``state-set``/s at 32 in flight
  (updates of random keys, durable);
* the first page of ``list-keys`` (1000 keys): the first request after start-up (counts the
  scope once) and the median of 20 warm ones;
* a whole ``export`` streamed from one snapshot (``"stream": true``);
* daemon start-up (process start to /healthz pass) after a clean stop and after ``kill -9``,
  and the store's own ``StateStore.open`` time on that file (no Python start-up in it);
* RSS of the daemon (VmRSS after the export, and its peak VmHWM), database + WAL size.

The database is filled DIRECTLY with sqlite3 (one transaction of bulk INSERTs into the
store's schema, created by ``StateStore.open``, like one big import: one revision, no
history rows): filling 10^6 keys through MDP ``txn`` batches would take minutes per row.
Prints a table; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dealers, stop
from state import load, stack_env, start

from plantd.protocol import mdp
from plantd.transport import recv_frames, send_frames

STATE = b"org.plantd.State"
SCOPES_SPREAD = 1000
VALUE = '{"v":1,"units":"degC"}'


def scope_of(i: int, spread: bool) -> str:
    return f"plant.{i % SCOPES_SPREAD:04d}" if spread else "plant.big"


def key_of(i: int) -> str:
    return f"tag{i:07d}"


def fill(path: Path, n: int, spread: bool) -> float:
    """A store file with ``n`` keys (schema by StateStore.open, rows by bulk INSERT)."""
    from plantd.state import StateStore

    async def create() -> None:
        store = await StateStore.open(path)
        await store.close()

    asyncio.run(create())
    t0 = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    now = time.time()
    con.execute("BEGIN IMMEDIATE")
    scopes = sorted({scope_of(i, spread) for i in range(min(n, SCOPES_SPREAD if spread else 1))})
    con.executemany(
        "INSERT INTO scopes(name, create_revision, created) VALUES(?, 1, ?)",
        [(s, now) for s in scopes],
    )
    batch: list[tuple[Any, ...]] = []
    for i in range(n):
        batch.append((scope_of(i, spread), key_of(i), VALUE, now))
        if len(batch) == 10_000:
            con.executemany(
                "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version,"
                " updated, expires) VALUES(?, ?, ?, 1, 1, 1, ?, NULL)",
                batch,
            )
            batch.clear()
    if batch:
        con.executemany(
            "INSERT INTO kv(scope, key, value, create_revision, mod_revision, version,"
            " updated, expires) VALUES(?, ?, ?, 1, 1, 1, ?, NULL)",
            batch,
        )
    con.execute("UPDATE meta SET value=1 WHERE name='revision'")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t0


def store_open_time(path: Path) -> float:
    from plantd.state import StateStore

    async def run() -> float:
        t0 = time.perf_counter()
        store = await StateStore.open(path)
        took = time.perf_counter() - t0
        await store.close()
        return took

    return asyncio.run(run())


def request(sock: Any, op: str, doc: dict[str, Any]) -> dict[str, Any]:
    send_frames(sock, mdp.encode_request(STATE, [op.encode(), json.dumps(doc).encode()]))
    if not sock.poll(60_000):
        raise RuntimeError(f"no reply to {op}")
    return json.loads(recv_frames(sock)[-1])


def get_latency(endpoint: str, n: int, spread: bool, count: int = 2000) -> tuple[float, float]:
    (sock,), _ = dealers(endpoint, 1)
    rnd = random.Random(1)
    bodies = []
    for _ in range(count + 100):
        i = rnd.randrange(n)
        doc = {"service": scope_of(i, spread), "key": key_of(i)}
        bodies.append(mdp.encode_request(STATE, [b"state-get", json.dumps(doc).encode()]))
    lat = []
    try:
        for j, msg in enumerate(bodies):
            t0 = time.perf_counter()
            send_frames(sock, msg)
            if not sock.poll(10_000):
                raise RuntimeError("get timed out")
            reply = recv_frames(sock)[-1]
            if b'"success":true' not in reply[:20]:
                raise RuntimeError(f"get failed: {reply[:200]!r}")
            if j >= 100:
                lat.append(time.perf_counter() - t0)
    finally:
        sock.close(0)
    lat.sort()
    return lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3


def set_rate(endpoint: str, n: int, spread: bool, seconds: float) -> float:
    rnd = random.Random(2)

    def body(seq: int) -> list[bytes]:
        i = rnd.randrange(n)
        doc = {"service": scope_of(i, spread), "key": key_of(i), "value": {"v": seq}}
        return [b"state-set", json.dumps(doc).encode()]

    rate, failed = load(endpoint, STATE, body, 32, seconds)
    if failed:
        print(f"# {failed} sets failed", file=sys.stderr)
    return rate


def first_page(endpoint: str, spread: bool) -> tuple[float, float, Any]:
    (sock,), _ = dealers(endpoint, 1)
    scope = scope_of(0, spread)
    try:
        t0 = time.perf_counter()
        doc = request(sock, "list-keys", {"service": scope})
        cold = (time.perf_counter() - t0) * 1e3
        assert doc["success"], doc
        warm = []
        for _ in range(20):
            t0 = time.perf_counter()
            request(sock, "list-keys", {"service": scope})
            warm.append((time.perf_counter() - t0) * 1e3)
        return cold, statistics.median(warm), doc["data"]["total"]
    finally:
        sock.close(0)


def export_time(endpoint: str) -> tuple[float, int]:
    from plantd.client import SyncClient
    from plantd.client.paging import pages_sync

    t0 = time.perf_counter()
    keys = 0
    with SyncClient(endpoint, timeout=60) as c:
        for page in pages_sync(c, STATE.decode(), "export", {}, stream=True):
            keys += page["count"]
    return time.perf_counter() - t0, keys


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def timed_start(env: dict[str, str], home: Path) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.perf_counter()
    proc = start("state", env, home)
    return proc, time.perf_counter() - t0


def one(args: argparse.Namespace, tmp: Path, n: int, spread: bool) -> dict[str, Any]:
    home = tmp / f"home-{n}-{int(spread)}"
    home.mkdir()
    db = home / "state.db"
    fill_s = fill(db, n, spread)
    open_s = store_open_time(db)
    env = stack_env(home, args.workers)
    env["PLANTD_STATE_DB"] = str(db)
    endpoint = env["PLANTD_BROKER_ENDPOINT"]
    broker = start("broker", env, home)
    state = None
    try:
        state, _ = timed_start(env, home)
        cold, warm, total = first_page(endpoint, spread)
        export_s, exported = export_time(endpoint)
        p50, p99 = get_latency(endpoint, n, spread)
        sets = set_rate(endpoint, n, spread, args.seconds)
        rss, hwm = rss_kib(state.pid)
        stop(state)
        state, clean_start = timed_start(env, home)
        # a few writes in the WAL, then a crash
        set_rate(endpoint, n, spread, 0.5)
        state.send_signal(signal.SIGKILL)
        state.wait(10)
        state, crash_start = timed_start(env, home)
        size = db.stat().st_size
        wal = db.with_name(db.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    finally:
        if state is not None:
            stop(state)
        stop(broker)
    return {
        "keys": n,
        "layout": f"{SCOPES_SPREAD} scopes" if spread else "1 scope",
        "fill_s": fill_s,
        "get_p50_ms": p50,
        "get_p99_ms": p99,
        "sets_per_s": sets,
        "page_cold_ms": cold,
        "page_warm_ms": warm,
        "total": total,
        "export_s": export_s,
        "exported": exported,
        "start_clean_s": clean_start,
        "start_kill9_s": crash_start,
        "open_s": open_s,
        "rss_mib": rss / 1024,
        "hwm_mib": hwm / 1024,
        "db_mib": (size + wal_size) / 2**20,
    }


COLUMNS = (
    ("keys", "keys", "{:>9,}"),
    ("layout", "layout", "{:<11}"),
    ("get_p50_ms", "get p50 ms", "{:>10.2f}"),
    ("get_p99_ms", "get p99 ms", "{:>10.2f}"),
    ("sets_per_s", "set/s@32", "{:>8,.0f}"),
    ("page_cold_ms", "page1 cold ms", "{:>13.1f}"),
    ("page_warm_ms", "page1 ms", "{:>8.1f}"),
    ("export_s", "export s", "{:>8.2f}"),
    ("start_clean_s", "start s", "{:>7.2f}"),
    ("start_kill9_s", "start kill-9 s", "{:>14.2f}"),
    ("open_s", "open s", "{:>6.3f}"),
    ("rss_mib", "RSS MiB", "{:>7.1f}"),
    ("hwm_mib", "peak MiB", "{:>8.1f}"),
    ("db_mib", "db MiB", "{:>7.1f}"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-keys", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=3.0, help="per set-throughput run")
    ap.add_argument("--workers", type=int, default=32, help="state daemon MDP workers")
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    ap.add_argument("--layouts", default="1,1000", help="scopes per size: 1, 1000 or both")
    args = ap.parse_args()
    sizes = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_keys]
    layouts = [x.strip() == "1000" for x in args.layouts.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="plantd-scale-", dir=args.dir))
    print(
        f"# sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cores, state daemon with"
        f" {args.workers} workers, value {VALUE}, dir {tmp.parent}"
    )
    print("  ".join(fmt_title(title, fmt) for _, title, fmt in COLUMNS), flush=True)
    try:
        for spread in layouts:
            for n in sizes:
                row = one(args, tmp, n, spread)
                print("  ".join(fmt.format(row[k]) for k, _, fmt in COLUMNS), flush=True)
                if row["exported"] != n or row["total"] != (n // SCOPES_SPREAD if spread else n):
                    print(f"# check: exported {row['exported']}, total {row['total']}")
                shutil.rmtree(tmp / f"home-{n}-{int(spread)}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fmt_title(title: str, fmt: str) -> str:
    width = int(re.match(r"\{:[<>]?(\d+)", fmt).group(1))  # type: ignore[union-attr]
    return title.ljust(width) if "<" in fmt else title.rjust(width)


if __name__ == "__main__":
    main()
