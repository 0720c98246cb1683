"""What tracing costs the broker: CPU per request with tracing off against another tree (main's
HEAD), and with the trace prefix passed on and with spans recorded.

Run: ``python bench/tracing.py [--other /work/main] [--rounds 5] [--seconds 3] [--inflight 16]``.
Each round runs every case once, in turn (so slow phases of a noisy machine hit all cases
alike), with bench/broker.py's load (RFC 18 peers, bare pyzmq, 2 echo workers, N requests in
flight); prints per case the median over rounds of req/s and the broker's CPU us/request:

* ``other, off``: the broker of ``--other`` (PYTHONPATH), no tracing;
* ``this, off``: this tree's broker, tracing off (the default);
* ``this, off, traced requests``: tracing off, every request carries a trace prefix (the
  broker strips, checks and passes it on);
* ``this, on, traced requests``: ``PLANTD_TRACING=on``, a span per request exported over
  OTLP/HTTP to a sink in this process (BatchSpanProcessor defaults);
* ``this, on, 1% sampled``: the same with ``OTEL_TRACES_SAMPLER=traceidratio`` at 0.01 (the
  bench's fixed trace id falls outside the 1%: no span is recorded, the sampler still runs).

``--core`` measures the same cases without sockets, the way the broker's own code sees them:
a fresh process per case and round feeds ``--requests`` request/reply pairs through
``BrokerCore.handle`` (a plantd worker, so the caller prefix is added) and prints the CPU
time (``process_time``: the span exporter's thread included) per request. The socket-level
figures on a shared 2-core machine move by 20% between rounds; this one by about 1%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import broker

THIS = str(Path(__file__).resolve().parents[1])
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and answers 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


CORE = """
import sys, time
try:
    from plantd import tracing
except ImportError:  # a tree from before tracing
    tracing = None
from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.security.caller import CALLER_MARKER

n, traced = int(sys.argv[1]), sys.argv[2] == "1"
core = BrokerCore(BrokerSettings(), started=0.0)
core.tracing = tracing.current() if tracing else None
W, C = b"\\x00W", b"\\x00C"
core.handle(W, [b"MDPW02", b"\\x01", b"echo", CALLER_MARKER], 0.0)
body = [b"echo", b'{"n":1}']
if traced:
    body[:0] = [b"\\x00plantd.trace/1", sys.argv[3].encode()]
request = [b"MDPC02", b"\\x01", b"echo", *body]
reply = [b"MDPW02", b"\\x04", C, b"", b'{"n":1}']
outbox = core.outbox
for _ in range(2000):
    core.handle(C, request, 0.0); core.handle(W, reply, 0.0); outbox.clear()
start = time.process_time()
for _ in range(n):
    core.handle(C, request, 0.0)
    core.handle(W, reply, 0.0)
    outbox.clear()
used = time.process_time() - start
tracing.shutdown() if tracing else None
print(used / n * 1e6)
"""


def core_run(env: dict[str, str], requests: int) -> float:
    traced = "1" if env.get("BENCH_TRACEPARENT") else "0"
    done = subprocess.run(
        [sys.executable, "-c", CORE, str(requests), traced, TRACEPARENT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def git_head(tree: str) -> str:
    done = subprocess.run(
        ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", default="/work/main", help="the tree to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--core", action="store_true", help="BrokerCore only, no sockets")
    parser.add_argument("--requests", type=int, default=200_000, help="per --core run")
    parser.add_argument(
        "--cases", default="", help="numbers of the cases to run, e.g. 1,2 (default: all)"
    )
    args = parser.parse_args()

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    base = dict(os.environ)
    path = base.get("PYTHONPATH", "")
    cases: list[tuple[str, dict[str, str]]] = [
        (f"other ({git_head(args.other)}), off", {"PYTHONPATH": f"{args.other}:{path}"}),
        (f"this ({git_head(THIS)}), off", {"PYTHONPATH": f"{THIS}:{path}"}),
        (
            "this, off, traced requests",
            {"PYTHONPATH": f"{THIS}:{path}", "BENCH_TRACEPARENT": TRACEPARENT},
        ),
        (
            "this, on, traced requests",
            {
                "PYTHONPATH": f"{THIS}:{path}",
                "BENCH_TRACEPARENT": TRACEPARENT,
                "PLANTD_TRACING": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
            },
        ),
        (
            "this, on, 1% sampled",
            {
                "PYTHONPATH": f"{THIS}:{path}",
                "BENCH_TRACEPARENT": TRACEPARENT,
                "PLANTD_TRACING": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.01",
            },
        ),
    ]
    if args.cases:
        cases = [cases[int(n) - 1] for n in args.cases.split(",")]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in cases}
    for _ in range(args.rounds):
        for label, env in cases:
            if args.core:
                cpu = core_run({**base, **env}, args.requests)
                results[label].append({"rps": 0.0, "cpu_us": cpu})
                continue
            os.environ.clear()
            os.environ.update(base, **env)
            results[label].append(broker.one_run("ours", "rfc18", args.inflight, args.seconds))
    os.environ.clear()
    os.environ.update(base)
    sink.shutdown()
    if args.core:
        print(f"# BrokerCore.handle only, {args.rounds} rounds x {args.requests} requests")
        print(f"{'case':34} {'core CPU us/req':>16} {'range':>12}")
        for label, runs in results.items():
            cpu = [r["cpu_us"] for r in runs]
            print(f"{label:34} {statistics.median(cpu):>16.2f} {min(cpu):>5.2f}-{max(cpu):<6.2f}")
        return

    print(
        f"# {os.cpu_count()} cores, {args.rounds} rounds x {args.seconds:g}s, "
        f"{args.inflight} in flight, RFC 18 peers, medians (min-max of broker CPU)"
    )
    print(f"{'case':34} {'req/s':>8} {'broker CPU us/req':>18} {'range':>12}")
    for label, runs in results.items():
        cpu = [r["cpu_us"] for r in runs]
        rps = statistics.median(r["rps"] for r in runs)
        print(
            f"{label:34} {rps:>8.0f} {statistics.median(cpu):>18.1f} "
            f"{min(cpu):>5.1f}-{max(cpu):<6.1f}"
        )


if __name__ == "__main__":
    main()
