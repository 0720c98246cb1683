"""Echo round trips through (a) our broker, (b) majortomo's broker, (c) a bare DEALER<->ROUTER.

Our broker is also measured with security on (CURVE on every connection, ZAP, per-message
authorization; a throwaway keyring, every peer as its admin) next to the same run without.

Run: ``python bench/broker.py [--seconds 3] [--runs 3] [--inflight 1 16] [--security]``.
Prints req/s, p50/p99 latency and the broker process's CPU time per request, for 1
sequential client and for 16 requests in flight with 2 workers, medians over runs, and our
broker's ratios to (b) and (c). The systems take turns within each round (one run of each,
then the next round), so a change in the machine's load hits them alike: on a shared
machine, compare rows of the same run only. ``--security`` runs only the two rows that give
the cost of CURVE (our broker with RFC 18 peers, without and with security).

``--burst N`` instead measures the Guide's asynchronous client (issue 11): one DEALER sends N
small requests in one go, then reads the N echoes (one echo worker). It prints, for our broker
with MDP/0.1 and majortomo peers and for majortomo's broker, the replies received, the wall
time and rate from the first send to the last reply, and the broker's CPU per request.

Every system gets the same load: one load-generator process with N DEALER sockets (one
request in flight each) and 2 worker processes, all plain blocking pyzmq speaking the
majortomo dialect (the only one majortomo's broker accepts; ours accepts it too). Our broker
is also measured with RFC 18 peers. CPU per request is read from /proc for the broker
process (on this noisy 2-core machine the steadier figure) and for all the processes of a
run together (load generator, broker, workers: CURVE encrypts each frame in each of them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import zmq
from _common import dealers, free_port, make_keyring, secure_client, secure_env, stop

HERE = os.path.abspath(__file__)
SERVICE = b"echo"
PAYLOAD = [b"echo", b'{"n":1}']

# frame layouts per dialect: (worker READY, worker HEARTBEAT, worker FINAL prefix, client REQUEST)
DIALECTS = {
    "majortomo": {
        "ready": [b"", b"MDPW02", b"\x01", SERVICE],
        "heartbeat": [b"", b"MDPW02", b"\x05"],
        "request_at": 3,  # index of the client address in a REQUEST to the worker
        "final": [b"", b"MDPW02", b"\x04"],
        "client": [b"", b"MDPC02", b"\x02", SERVICE],
    },
    "rfc18": {
        "ready": [b"MDPW02", b"\x01", SERVICE],
        "heartbeat": [b"MDPW02", b"\x05"],
        "request_at": 2,
        "final": [b"MDPW02", b"\x04"],
        "client": [b"MDPC02", b"\x01", SERVICE],
    },
    "mdp01": {
        "ready": [b"", b"MDPW01", b"\x01", SERVICE],
        "heartbeat": [b"", b"MDPW01", b"\x04"],
        "request_at": 3,
        "final": [b"", b"MDPW01", b"\x03"],
        "client": [b"", b"MDPC01", SERVICE],
    },
}


# --- processes --------------------------------------------------------------------------


def run_worker(endpoint: str, dialect: str) -> None:
    """Blocking echo worker: minimal per-message work so the broker is what we measure."""
    d = DIALECTS[dialect]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    secure_client(sock)
    sock.connect(endpoint)
    sock.send_multipart(d["ready"])
    at, final, heartbeat = d["request_at"], d["final"], d["heartbeat"]
    last = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        if sock.poll(500):
            msg = sock.recv_multipart()
            if len(msg) > at + 1:
                sock.send_multipart([*final, msg[at], b"", *msg[at + 2 :]])
        now = time.monotonic()
        if now - last > 1.0:
            sock.send_multipart(heartbeat)
            last = now


def run_raw_server(endpoint: str) -> None:
    """(c): a ROUTER that echoes every request itself, no broker in between."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        msg = sock.recv_multipart()
        sock.send_multipart(msg)


def run_majortomo(endpoint: str) -> None:
    from majortomo.broker import Broker

    broker = Broker(bind=endpoint, heartbeat_interval=2.5, heartbeat_timeout=10.0)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    broker.run()


def run_ours(endpoint: str) -> None:
    import asyncio

    from plantd.broker.core import BrokerSettings
    from plantd.broker.server import BrokerServer

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await BrokerServer(BrokerSettings(endpoint=endpoint)).run(stop)

    asyncio.run(main())


def run_load(endpoint: str, dialect: str, inflight: int, seconds: float, raw: bool) -> None:
    """N DEALERs, one request in flight each, for ``seconds``; prints JSON latencies."""
    request = [b"", *PAYLOAD] if raw else [*DIALECTS[dialect]["client"], *PAYLOAD]
    traceparent = os.environ.get("BENCH_TRACEPARENT")  # bench/tracing.py: traced requests
    if traceparent and not raw:
        at = len(DIALECTS[dialect]["client"])
        request[at:at] = [b"\x00plantd.trace/1", traceparent.encode()]
    socks, poller = dealers(endpoint, inflight)
    # warm-up: one round trip per socket
    for s in socks:
        s.send_multipart(request)
    for s in socks:
        if not s.poll(10000):
            print(json.dumps({"error": "no reply during warm-up"}))
            return
        s.recv_multipart()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent samples broker CPU, then tells us to go
    sent_at = {}
    lat: list[float] = []
    end = time.perf_counter() + seconds
    for s in socks:
        sent_at[s] = time.perf_counter()
        s.send_multipart(request)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for s, _ in poller.poll(1000):
            s.recv_multipart()
            t = time.perf_counter()
            lat.append(t - sent_at[s])
            sent_at[s] = t
            s.send_multipart(request)
    # drain what is in flight so the broker CPU sample covers completed requests only
    for s in socks:
        if s.poll(2000):
            s.recv_multipart()
            lat.append(time.perf_counter() - sent_at[s])
    print(json.dumps({"n": len(lat), "lat": lat}), flush=True)


def run_burst(endpoint: str, dialect: str, count: int) -> None:
    """The Guide's async client: send ``count`` requests on one DEALER, then read the echoes
    (each read bounded by 10 s of silence); prints JSON {n, seconds}."""
    request = [*DIALECTS[dialect]["client"], b"echo"]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send_multipart(request)  # warm-up round trip: the worker is registered
    if not sock.poll(10000):
        print(json.dumps({"error": "no reply during warm-up"}), flush=True)
        return
    sock.recv_multipart()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(count):
        sock.send_multipart([*request[:-1], b"%d" % i])
    n = 0
    while n < count and sock.poll(10000):
        sock.recv_multipart()
        n += 1
        last = time.perf_counter()
    print(json.dumps({"n": n, "seconds": (last - start) if n else 0.0}), flush=True)


# --- orchestration ----------------------------------------------------------------------


#: the environment of the processes of a CURVE row (set by main when a row needs it)
SECURE_ENV: dict[str, str] | None = None


def spawn(*args: str, secure: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HERE, "--role", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=SECURE_ENV if secure else None,
    )


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def cpu_seconds(procs: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in procs]


def measure(
    server: subprocess.Popen[str],
    load: subprocess.Popen[str],
    what: str,
    peers: Sequence[subprocess.Popen[str]] = (),
) -> tuple[dict[str, Any], float, float]:
    """Wait for ``load``'s "ready", start it, and return its JSON result with the CPU seconds
    the server process spent meanwhile, and those of every process of the run (the server,
    ``peers`` and the load generator: CURVE costs in each of them)."""
    assert load.stdout is not None and load.stdin is not None
    line = load.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"{what} failed: {line}")
    procs = [psutil.Process(p.pid) for p in (server, *peers, load)]
    before = cpu_seconds(procs)
    load.stdin.write("go\n")
    load.stdin.flush()
    result: dict[str, Any] = json.loads(load.stdout.readline())
    after = cpu_seconds(procs)
    used = [a - b for a, b in zip(after, before, strict=True)]
    return result, used[0], sum(used)


def one_run(system: str, dialect: str, inflight: int, seconds: float) -> dict[str, float]:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[str]] = []
    secure = system == "ours-curve"
    try:
        role = {"ours": "ours", "ours-curve": "ours", "majortomo": "majortomo", "raw": "raw"}
        server = spawn(role[system], endpoint, secure=secure)
        procs.append(server)
        wait_port(port)
        if system != "raw":
            for _ in range(2):
                procs.append(spawn("worker", endpoint, dialect, secure=secure))
            time.sleep(0.5)
        load = spawn(
            "load", endpoint, dialect, str(inflight), str(seconds), str(system == "raw"),
            secure=secure,
        )  # fmt: skip
        procs.append(load)
        result, used, everyone = measure(server, load, f"{system}: load generator", procs[1:-1])
        lat = sorted(result["lat"])
        n = len(lat)
        return {
            "rps": n / seconds,
            "p50_us": lat[n // 2] * 1e6,
            "p99_us": lat[min(n - 1, int(n * 0.99))] * 1e6,
            "cpu_us": used / n * 1e6,
            "all_cpu_us": everyone / n * 1e6,
        }
    finally:
        for p in reversed(procs):
            stop(p)


def one_burst(system: str, dialect: str, count: int) -> dict[str, float]:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[str]] = []
    try:
        server = spawn(system, endpoint)
        procs.append(server)
        wait_port(port)
        procs.append(spawn("worker", endpoint, dialect))
        load = spawn("burst", endpoint, dialect, str(count))
        procs.append(load)
        result, used, _ = measure(server, load, f"{system}: burst client")
        n = result["n"]
        return {
            "n": n,
            "seconds": result["seconds"],
            "rps": n / result["seconds"] if n else 0.0,
            "cpu_us": used / max(n, 1) * 1e6,
        }
    finally:
        for p in reversed(procs):
            stop(p)


def burst_table(count: int, runs: int) -> None:
    cases = [
        ("ours", "mdp01", "our broker, MDP/0.1 peers"),
        ("ours", "majortomo", "our broker, majortomo peers"),
        ("majortomo", "majortomo", "majortomo broker"),
    ]
    print(f"# {os.cpu_count()} cores, burst of {count} from one async client, {runs} runs, medians")
    print(f"{'system':32} {'replies':>8} {'seconds':>8} {'req/s':>8} {'broker CPU us/req':>18}")
    for system, dialect, label in cases:
        results = [one_burst(system, dialect, count) for _ in range(runs)]
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"{label:32} {med['n']:>8.0f} {med['seconds']:>8.1f} {med['rps']:>8.0f} "
            f"{med['cpu_us']:>18.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--burst", type=int, default=0, help="measure an N-request burst")
    parser.add_argument(
        "--security", action="store_true", help="only the rows without and with CURVE"
    )
    args = parser.parse_args()
    if args.burst:
        burst_table(args.burst, args.runs)
        return

    global SECURE_ENV
    keyring = tempfile.mkdtemp(prefix="bench-keyring-")
    SECURE_ENV = secure_env(make_keyring(Path(keyring)))
    cases = [
        ("ours", "rfc18", "our broker, RFC 18 peers"),
        ("ours-curve", "rfc18", "our broker, RFC 18 peers, CURVE"),
        ("ours", "majortomo", "our broker, majortomo peers"),
        ("majortomo", "majortomo", "majortomo broker"),
        ("raw", "majortomo", "raw DEALER<->ROUTER"),
    ]
    if args.security:
        cases = cases[:2]
    table: dict[tuple[str, int], dict[str, float]] = {}
    print(f"# {os.cpu_count()} cores, {args.runs} runs x {args.seconds:g}s, medians")
    print(
        f"{'system':32} {'in flight':>9} {'req/s':>8} {'p50 us':>8} {'p99 us':>8}"
        f" {'broker CPU us/req':>18} {'all CPU us/req':>15}"
    )
    for inflight in args.inflight:
        rounds = [
            [one_run(system, dialect, inflight, args.seconds) for system, dialect, _ in cases]
            for _ in range(args.runs)
        ]
        for i, (system, _dialect, label) in enumerate(cases):
            runs = [r[i] for r in rounds]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            table[(label, inflight)] = med
            cpu = "-" if system == "raw" else f"{med['cpu_us']:.0f}"
            if system == "raw":
                cpu = f"({med['cpu_us']:.0f} server)"
            print(
                f"{label:32} {inflight:>9} {med['rps']:>8.0f} {med['p50_us']:>8.0f} "
                f"{med['p99_us']:>8.0f} {cpu:>18} {med['all_cpu_us']:>15.0f}",
                flush=True,
            )
    shutil.rmtree(keyring, ignore_errors=True)
    for inflight in args.inflight:
        curve = table[("our broker, RFC 18 peers, CURVE", inflight)]["rps"]
        plain = table[("our broker, RFC 18 peers", inflight)]["rps"]
        print(f"in flight {inflight}: CURVE costs {1 - curve / plain:.1%} of req/s (RFC 18 peers)")
    if args.security:
        return
    for inflight in args.inflight:
        ours = table[("our broker, majortomo peers", inflight)]["rps"]
        ours18 = table[("our broker, RFC 18 peers", inflight)]["rps"]
        mt = table[("majortomo broker", inflight)]["rps"]
        raw = table[("raw DEALER<->ROUTER", inflight)]["rps"]
        print(
            f"in flight {inflight}: ours/majortomo = {ours / mt:.2f}x (RFC 18: {ours18 / mt:.2f}x), "
            f"ours/raw = {ours / raw:.2f} (RFC 18: {ours18 / raw:.2f})"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "worker":
            run_worker(rest[0], rest[1])
        elif role == "raw":
            run_raw_server(rest[0])
        elif role == "majortomo":
            run_majortomo(rest[0])
        elif role == "ours":
            run_ours(rest[0])
        elif role == "burst":
            run_burst(rest[0], rest[1], int(rest[2]))
        elif role == "load":
            run_load(rest[0], rest[1], int(rest[2]), float(rest[3]), rest[4] == "True")
    else:
        main()
