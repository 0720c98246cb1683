"""How logger queries and retention cost grow with the number of stored records.

Run: ``python bench/scale_logger.py [--sizes 100000,1000000,10000000] [--max-records N]``.

One logger database grows through the sizes (10^5, 10^6, 10^7 records by default;
``--max-records`` caps the run). Records go in through the store API (``LogStore.add`` and
``flush``, in batches of ``--batch``), not over the bus: the bus rate is bench/logbus.py's
subject, this one measures what a large store costs. The records look like a plant's: 50
services, levels info 90% / debug 7% / warning 2.5% / error 0.5% / critical 0.01%, one record
every 50 ms of simulated time (10^7 records span ~6 days, inside the 7-day ``max_age``), a
message with a few variable words, and a rare ``needle`` word in one record in 100,000.

At each size it prints the p50 of ``query_page`` (the code behind the ``query`` operation,
on the store's reader thread; the first page of 100 records, newest first) for: one service,
a rare level (``error`` and above, 0.5%), the rarest level (``critical``), a 10-minute time
range, a service glob (10 of the 50), a common text, a rare text (a substring: a scan of at
most ``scan_rows`` records per page, see docs/logging.md), and a service + level + time
combination; the time to follow every page of the rare text; then one retention pass that trims nothing (the steady state, every
``retention_interval``) and one that trims the oldest 1% by ``max_rows``; the process RSS and
the database size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from plantd.logger.store import LogStore, StoreSettings  # noqa: E402

SERVICES = [f"org.plantd.module.Unit{i:02d}" for i in range(50)]
STEP = 0.05  # simulated seconds between records
NEEDLE_EVERY = 100_000


def removed_needles(removed: int) -> int:
    """Needle records among the ``removed`` oldest (retention trims the smallest ids)."""
    return (removed - 1) // NEEDLE_EVERY + 1 if removed else 0


def level_of(i: int) -> str:
    r = ((i * 2654435761) >> 11) % 10_000  # a multiplicative hash: independent of the service
    if r == 0:
        return "critical"
    if r <= 50:
        return "error"
    if r <= 300:
        return "warning"
    if r <= 1000:
        return "debug"
    return "info"


def record(i: int, base: float) -> tuple[str, dict[str, Any]]:
    service = SERVICES[(i * 31) % len(SERVICES)]
    level = level_of(i)
    msg = f"valve V{i % 997} at {i % 100} pct, loop {i % 13} ok"
    if i % NEEDLE_EVERY == 0:
        msg += f" needle-{i}"
    doc = {
        "ts": base + i * STEP,
        "service": service,
        "level": level,
        "host": f"plc{i % 8}",
        "pid": 1000 + i % 8,
        "logger": "plant.control",
        "msg": msg,
        "fields": {"valve": f"V{i % 997}", "pct": i % 100},
    }
    return f"{service}.{level}", doc


async def fill(store: LogStore, start: int, stop: int, base: float, batch: int) -> float:
    t0 = time.perf_counter()
    for first in range(start, stop, batch):
        for i in range(first, min(first + batch, stop)):
            topic, doc = record(i, base)
            store.add(topic, doc)
        await store.flush()
    return time.perf_counter() - t0


async def p50(store: LogStore, params: dict[str, Any], runs: int) -> float:
    """Median milliseconds of the first page of ``params``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await store.query_page(dict(params))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def rss_mb() -> tuple[float, float]:
    """Current and peak RSS of this process (the store runs in it), MiB."""
    with open("/proc/self/statm") as fh:
        current = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return current / 2**20, peak / 2**20


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--max-records", type=int, default=0, help="skip sizes above this")
    ap.add_argument("--batch", type=int, default=100_000, help="records per store flush")
    ap.add_argument("--runs", type=int, default=7, help="runs per query (p50)")
    ap.add_argument("--dir", default="", help="where the database goes (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.max_records:
        sizes = [s for s in sizes if s <= args.max_records]
    top = max(sizes)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="plantd-scale-logger-"))
    path = workdir / "logger.sqlite"
    path.unlink(missing_ok=True)
    base = time.time() - top * STEP - 60
    settings = StoreSettings(
        path=path,
        log_backend=None,
        event_backend=None,
        max_age=0,
        max_rows=0,
        retention_interval=1e9,
        flush_records=args.batch,
        flush_interval=3600,
        max_pending=args.batch + 1,
    )
    print(f"sqlite {__import__('sqlite3').sqlite_version}, database {path}")
    header = (
        f"{'records':>10} {'fill s':>7} {'service':>8} {'lvl>=err':>8} {'critical':>8}"
        f" {'10 min':>8} {'glob':>8} {'text':>8} {'rare txt':>8} {'svc+lvl':>8}"
        f" {'rare all':>8} {'pages':>5} {'ret idle':>8} {'ret 1%':>8} {'RSS MiB':>8} {'peak':>6}"
        f" {'db MiB':>7}"
    )
    print("query columns: p50 ms of the first page (100 records, newest first)")
    print(header)
    async with LogStore(settings) as store:
        have = removed = 0
        for size in sizes:
            fill_s = await fill(store, have, size, base, args.batch)
            have = size
            last = base + (size - 1) * STEP
            mid = base + size * STEP / 2
            queries = [
                {"service": SERVICES[7]},
                {"level": "error"},
                {"level": "critical"},
                {"since": mid, "until": mid + 600},
                {"service": "org.plantd.module.Unit1*"},
                {"text": "loop 3 ok"},
                {"text": "needle"},
                {"service": SERVICES[7], "level": "warning", "since": last - 86400},
            ]
            cells = [f"{await p50(store, params, args.runs):8.1f}" for params in queries]
            t0 = time.perf_counter()
            found = pages = 0
            async for page in store.query_pages({"text": "needle"}):
                found += len(page["records"])
                pages += 1
            every = time.perf_counter() - t0
            assert found == (size - 1) // NEEDLE_EVERY + 1 - removed_needles(removed), found
            # steady state: both limits on, nothing old or beyond max_rows to delete
            store.settings.max_rows = 2 * top
            store.settings.max_age = 30 * 86400.0
            t0 = time.perf_counter()
            assert await store.apply_retention() == 0
            idle = (time.perf_counter() - t0) * 1000
            store.settings.max_age = 0
            store.settings.max_rows = size - removed - size // 100
            t0 = time.perf_counter()
            trimmed = await store.apply_retention()
            trim = (time.perf_counter() - t0) * 1000
            store.settings.max_rows = 0
            assert trimmed == size // 100, trimmed
            removed += trimmed
            current, peak = rss_mb()
            db = store.db.size_bytes() / 2**20
            print(
                f"{size:>10,} {fill_s:7.1f} {' '.join(cells)} {every * 1000:8.0f} {pages:5d}"
                f" {idle:8.1f} {trim:8.1f}"
                f" {current:8.0f} {peak:6.0f} {db:7.0f}",
                flush=True,
            )
    print("rare all: ms to follow every page of the rare text (a scan of every record,")
    print("scan_rows per page); pages: how many.")
    print("ret idle: a retention pass with nothing to delete; ret 1%: one that trims the")
    print("oldest 1% by max_rows (chunks of 20,000). RSS: this process, which holds the store.")


if __name__ == "__main__":
    asyncio.run(main())
