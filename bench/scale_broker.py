"""How the broker's cost grows with the number of workers and clients (issue 10).

Run: ``python bench/scale_broker.py [--sizes 10,100,1000,4000] [--seconds 3]``. For each size N:
one broker process (ours, production settings), N RFC 18 echo workers (spread over two
processes, each polling its sockets and heartbeating every 2.5 s) and N client DEALERs in
one load process with 16 requests in flight, rotating over the clients. Prints per row:

- req/s and p50 latency at 16 in flight;
- the broker's idle CPU (heartbeats only: N workers and N clients connected, no requests);
- the broker's RSS per worker (RSS growth from no peers to N workers and N clients, / N);
- ``mmi.workers``: pages and the wall time to read all of them, and the workers listed.

The workers' and clients' own processes are part of the pipeline on this 2-core machine, so
req/s at large N partly measures them; the broker's CPU per request is printed to separate
its share.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import zmq
from _common import free_port, stop

HERE = os.path.abspath(__file__)
SERVICE = b"bench.echo"
READY = [b"MDPW02", b"\x01", SERVICE]
HEARTBEAT = [b"MDPW02", b"\x05"]
FINAL = [b"MDPW02", b"\x04"]
REQUEST = [b"MDPC02", b"\x01", SERVICE, b"echo", b'{"n":1}']
INFLIGHT = 16


def _context(sockets: int) -> zmq.Context:
    ctx = zmq.Context.instance()
    ctx.set(zmq.MAX_SOCKETS, sockets + 64)
    return ctx


def run_broker(endpoint: str) -> None:
    import asyncio

    from plantd.broker.core import BrokerSettings
    from plantd.broker.server import BrokerServer

    async def main() -> None:
        stop_event = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
        await BrokerServer(BrokerSettings(endpoint=endpoint)).run(stop_event)

    asyncio.run(main())


def run_workers(endpoint: str, count: int) -> None:
    """``count`` echo workers on one poller; each heartbeats every 2.5 s like ours."""
    ctx = _context(count)
    poller = zmq.Poller()
    socks = []
    for _ in range(count):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send_multipart(READY)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    last = time.monotonic()
    while True:
        for s, _ in poller.poll(250):
            msg = s.recv_multipart()
            if len(msg) > 4 and msg[1] == b"\x02":
                s.send_multipart([*FINAL, msg[2], b"", *msg[4:]])
        now = time.monotonic()
        if now - last >= 2.5:
            last = now
            for s in socks:
                s.send_multipart(HEARTBEAT)


def run_clients(endpoint: str, count: int, seconds: float) -> None:
    """``count`` client DEALERs; 16 requests in flight, each from the next idle client."""
    ctx = _context(count)
    poller = zmq.Poller()
    socks = []
    for _ in range(count):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    time.sleep(0.5)  # let the connections settle before the idle sample
    print("ready", flush=True)
    sys.stdin.readline()
    sent_at: dict[zmq.Socket, float] = {}
    nxt = 0

    def send_next() -> None:
        nonlocal nxt
        while socks[nxt] in sent_at:
            nxt = (nxt + 1) % count
        s = socks[nxt]
        nxt = (nxt + 1) % count
        sent_at[s] = time.perf_counter()
        s.send_multipart(REQUEST)

    for _ in range(min(INFLIGHT, count)):
        send_next()
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for s, _ in poller.poll(1000):
            s.recv_multipart()
            lat.append(time.perf_counter() - sent_at.pop(s))
            send_next()
    for s in list(sent_at):
        if s.poll(2000):
            s.recv_multipart()
    print(json.dumps({"n": len(lat), "lat": sorted(lat)}), flush=True)
    sys.stdin.readline()  # stay connected until the parent has read mmi.workers


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HERE, "--role", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited early")
    return line


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def mmi_workers_pages(endpoint: str, timeout: float = 10.0) -> tuple[int, int, float]:
    """Read every page of ``mmi.workers``: (pages, workers listed, seconds)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    pages = listed = 0
    after = None
    start = time.perf_counter()
    try:
        while pages < 10_000:
            body = [] if after is None else [json.dumps({"after": after}).encode()]
            sock.send_multipart([b"MDPC02", b"\x01", b"mmi.workers", *body])
            if not sock.poll(timeout * 1000):
                raise TimeoutError("mmi.workers")
            doc = json.loads(sock.recv_multipart()[-1])
            pages += 1
            listed += len(doc.get("workers", []))
            after = doc.get("next")
            if not doc.get("more") or after is None:
                break
    finally:
        sock.close(linger=0)
    return pages, listed, time.perf_counter() - start


def wait_workers(endpoint: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mmi_workers_pages(endpoint)[1] >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} workers did not register")


def one_size(count: int, seconds: float, idle_seconds: float) -> dict[str, float]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[str]] = []
    try:
        broker = spawn("broker", endpoint)
        procs.append(broker)
        time.sleep(0.5)
        bproc = psutil.Process(broker.pid)
        rss0 = bproc.memory_info().rss
        halves = [count // 2, count - count // 2] if count > 1 else [count]
        for part in halves:
            if part:
                procs.append(spawn("workers", endpoint, str(part)))
                read_line(procs[-1], "workers")
        wait_workers(endpoint, count)
        load = spawn("clients", endpoint, str(count), str(seconds))
        procs.append(load)
        read_line(load, "clients")
        time.sleep(1.0)
        c0 = cpu_seconds(bproc)
        time.sleep(idle_seconds)
        idle_pct = (cpu_seconds(bproc) - c0) / idle_seconds * 100
        rss_per_worker = (bproc.memory_info().rss - rss0) / count
        assert load.stdin is not None
        c0 = cpu_seconds(bproc)
        load.stdin.write("go\n")
        load.stdin.flush()
        result = json.loads(read_line(load, "clients"))
        used = cpu_seconds(bproc) - c0
        pages, listed, took = mmi_workers_pages(endpoint)
        load.stdin.write("done\n")
        load.stdin.flush()
        lat = result["lat"]
        n = max(1, len(lat))
        return {
            "rps": len(lat) / seconds,
            "p50_ms": lat[n // 2] * 1e3 if lat else float("nan"),
            "cpu_us": used / n * 1e6,
            "idle_pct": idle_pct,
            "rss_kb": rss_per_worker / 1024,
            "pages": pages,
            "listed": listed,
            "mmi_ms": took * 1e3,
        }
    finally:
        for p in reversed(procs):
            stop(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,4000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(
        f"# broker scale: {os.cpu_count()} cores, {args.seconds:g}s per row, {INFLIGHT} in flight"
    )
    print(
        f"{'workers=clients':>15} {'req/s':>8} {'p50 ms':>7} {'broker us/req':>13} "
        f"{'idle CPU %':>10} {'RSS/worker KiB':>14} {'mmi.workers':>22}"
    )
    for count in sizes:
        r = one_size(count, args.seconds, args.idle_seconds)
        mmi = f"{r['listed']:.0f} in {r['pages']:.0f} pages, {r['mmi_ms']:.0f} ms"
        print(
            f"{count:>15} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['cpu_us']:>13.0f} "
            f"{r['idle_pct']:>10.1f} {r['rss_kb']:>14.1f} {mmi:>22}",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "broker":
            run_broker(rest[0])
        elif role == "workers":
            run_workers(rest[0], int(rest[1]))
        elif role == "clients":
            run_clients(rest[0], int(rest[1]), float(rest[2]))
    else:
        main()
