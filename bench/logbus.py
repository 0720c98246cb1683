"""Log bus -> logger store throughput and publish-to-query delay.

Run: ``python bench/logbus.py [--producers 4] [--rates 5000,10000,20000] [--seconds 5]``.

Processes, as in a deployment: one "broker" (Majordomo broker + the log bus proxy), one
"logger" (``LogStore`` + its MDP worker, daemon defaults: flush every 2000 records or
50 ms), N producers logging through ``LogBusHandler`` at an even share of the offered rate,
and this process, which coordinates and probes. For each offered rate it reports:

* stored/s: records of the run divided by the time from start until the logger had stored
  all of them (a logger that falls behind shows up here, not as a pretty offered rate);
* missed: seq gaps the logger counted for the producers plus records it dropped; the goal is
  0 at >= 10,000 records/s;
* p50/p99 delay: from publishing a probe record to the first ``query`` over MDP that returns
  it (one probe in flight, 20-80 ms apart, polled every 2 ms, during the load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import free_port, stop

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)


def run_broker(endpoint: str, front: str, back: str) -> None:
    from plantd.broker.bus import BusProxy
    from plantd.broker.core import BrokerSettings
    from plantd.broker.server import BrokerServer

    proxy = BusProxy("log", front, back, hwm=100_000)
    proxy.start()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(15, stop.set)
        await BrokerServer(BrokerSettings(endpoint=endpoint)).run(stop)

    try:
        asyncio.run(main())
    finally:
        proxy.stop()


def run_logger(endpoint: str, back: str, path: str, flush_interval: float) -> None:
    """The logger module in the foreground, minus the daemon lifecycle (pid file, health port)."""
    from plantd.config import Home
    from plantd.daemons.health import HealthRegistry
    from plantd.daemons.lifecycle import DaemonContext
    from plantd.logger.daemon import LoggerModule, LoggerSettings

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(15, stop.set)
        settings = LoggerSettings(
            endpoint=endpoint,
            log_bus_sub=back,
            event_bus_sub="",
            database=Path(path),
            flush_interval=flush_interval,
            max_rows=0,
            max_age=0,
        )
        home = Path(path).parent
        ctx = DaemonContext(
            name="logger",
            settings=settings,
            home=Home(home),
            log=logging.getLogger("plantd.logger"),
            stop=stop,
            health=HealthRegistry(),
            metrics=None,
            pid_file=home / "logger.pid",
        )
        await LoggerModule(settings).run(ctx)

    asyncio.run(main())


def run_producer(front: str, name: str, rate: float, seconds: float) -> None:
    """Warm up until "go" on stdin, then log ``rate`` records/s for ``seconds``."""
    import threading

    from plantd.logbus import LogBusHandler

    handler = LogBusHandler(name, front, hwm=100_000)
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    go = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
    print("ready", flush=True)
    while not go.is_set():
        log.debug("warm-up")
        go.wait(0.02)
    first = handler.seq + 1
    start = time.monotonic()
    n = 0
    burst = max(1, int(rate / 200))  # 5 ms worth per burst
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) * rate)
        if n >= due:
            time.sleep(min(0.005, (n + burst) / rate - (now - start)))
            continue
        for _ in range(min(burst, due - n)):
            n += 1
            log.info("record %d of a busy producer", n, extra={"fields": {"n": n, "unit": "P1"}})
    print(
        json.dumps(
            {
                "name": name,
                "first": first,
                "last": handler.seq,
                "sent": n,
                "dropped": handler.dropped,
            }
        ),
        flush=True,
    )
    time.sleep(0.5)  # let the socket drain before exit
    handler.close()


# --- coordinator ------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HERE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def probe_logger(front: str) -> tuple[logging.Logger, logging.Handler]:
    from plantd.logbus import LogBusHandler

    handler = LogBusHandler("bench.probe", front)
    log = logging.getLogger(f"bench.probe.{uuid.uuid4().hex[:8]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, handler


async def probe_loop(c: object, log: logging.Logger, until: asyncio.Event) -> list[float]:
    """Publish a probe, poll ``query`` until it is visible; delays in seconds."""
    delays: list[float] = []
    while not until.is_set():
        token = uuid.uuid4().hex
        t0 = time.time()
        log.warning("probe %s", token)
        while True:
            reply = await c.call(
                "org.plantd.Logger",
                "query",
                {  # type: ignore[attr-defined]
                    "service": "bench.probe",
                    "since": t0 - 1,
                    "text": token,
                    "limit": 1,
                },
            )
            if reply["data"]["records"]:
                delays.append(time.time() - t0)
                break
            if time.time() - t0 > 10:
                break  # lost probe: not a delay sample (it would show as missed)
            await asyncio.sleep(0.002)
        # a random gap: a fixed one phase-locks the probes to the flush timer
        await asyncio.sleep(random.uniform(0.02, 0.08))
    return delays


async def one_rate(args: argparse.Namespace, rate: int, tmp: str) -> dict[str, float]:
    from plantd.client import Client

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    procs = [spawn("broker", endpoint, front, back)]
    await asyncio.sleep(0.5)
    procs.append(
        spawn("logger", endpoint, back, f"{tmp}/logger-{rate}.sqlite", str(args.flush_interval))
    )
    names = [f"bench.p{i}" for i in range(args.producers)]
    producers = [
        spawn("producer", front, n, str(rate / args.producers), str(args.seconds)) for n in names
    ]
    procs += producers
    try:
        for p in producers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        probe_log, probe_handler = probe_logger(front)
        async with Client(endpoint, timeout=10.0) as c:
            deadline = time.monotonic() + 30
            while True:  # every producer joined the bus (the logger saw its warm-up)
                probe_log.debug("warm-up")
                try:
                    stats = (await c.call("org.plantd.Logger", "stats", {}))["data"]
                    seen = {p["service"] for p in stats["producers"]}
                    if seen >= {*names, "bench.probe"}:
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, "producers never reached the logger"
                await asyncio.sleep(0.1)
            before = stats["ingest"]["stored"]
            for p in producers:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            t_go = time.monotonic()
            done = asyncio.Event()
            probes = asyncio.create_task(probe_loop(c, probe_log, done))
            reports = []
            for p in producers:
                assert p.stdout is not None
                line = await asyncio.to_thread(p.stdout.readline)
                reports.append(json.loads(line))
            expected = sum(r["last"] - r["first"] + 1 for r in reports)
            # wait until the logger stored every record of the run (bounded)
            while True:
                stats = (await c.call("org.plantd.Logger", "stats", {}))["data"]
                ours = {p["service"]: p for p in stats["producers"] if p["service"] in names}
                caught_up = all(ours[r["name"]]["last_seq"] >= r["last"] for r in reports)
                if caught_up and stats["ingest"]["pending"] == 0:
                    break
                if time.monotonic() - t_go > args.seconds + 30:
                    break
                await asyncio.sleep(0.01)
            t_done = time.monotonic()
            done.set()
            delays = await probes
            probe_log.removeHandler(probe_handler)
            probe_handler.close()
            stored = stats["ingest"]["stored"] - before
            missed = sum(p["missed"] for p in ours.values()) + stats["ingest"]["dropped"]
            missed += sum(r["dropped"] for r in reports)
            missed += sum(max(0, r["last"] - ours[r["name"]]["last_seq"]) for r in reports)
    finally:
        for p in reversed(procs):
            stop(p)
    delays.sort()
    q = statistics.quantiles(delays, n=100) if len(delays) >= 2 else [float("nan")] * 99
    return {
        "offered": rate,
        "records": expected,
        "sent_rate": expected / args.seconds,
        "stored_rate": expected / (t_done - t_go),
        "stored": stored,
        "missed": missed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "probes": len(delays),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("broker", "logger", "producer"):
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "broker":
            run_broker(*rest)
        elif role == "logger":
            run_logger(rest[0], rest[1], rest[2], float(rest[3]))
        else:
            run_producer(rest[0], rest[1], float(rest[2]), float(rest[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--rates", default="5000,10000,20000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--flush-interval", type=float, default=0.05)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    print(
        f"# {os.cpu_count()} cores, {args.producers} producers, {args.seconds:g}s per rate, "
        f"flush every 2000 records or {args.flush_interval * 1000:g} ms"
    )
    print(
        f"{'offered/s':>10} {'sent/s':>8} {'records':>9} {'stored/s':>9} {'missed':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'probes':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="plantd-bench-") as tmp:
        for rate in rates:
            r = asyncio.run(one_rate(args, rate, tmp))
            print(
                f"{r['offered']:>10} {r['sent_rate']:>8.0f} {r['records']:>9} {r['stored_rate']:>9.0f} "
                f"{r['missed']:>7} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['probes']:>6}",
                flush=True,
            )


if __name__ == "__main__":
    main()
