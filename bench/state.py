"""State service throughput and latency through one running broker, next to its ceilings.

Run: ``python bench/state.py [--seconds 3] [--inflight 32] [--rounds 3] [--dir DIR]
[--fsync-delay-ms MS]``. Starts a broker, a
state daemon and an echo daemon as processes (temporary PLANTD_HOME on ``--dir``, random
ports) and measures, through that same broker:

* durable ``state-set``/s and ``state-get``/s with 1 request and with N requests in flight
  (N DEALER sockets, one request each, blocking, pre-encoded: the client stays cheap);
* key-writes/s with ``txn`` batches of 100 keys;
* watch delivery latency p50/p99: ``state-set`` sent -> its event received on the state bus;
* echo round trips/s with the same concurrency: through the echo daemon (one worker) and
  through an echo pool with as many workers in one process as the state daemon has (the
  transport ceiling for the state daemon's topology);
* single-row durable commits/s of plain sqlite3 with the store's pragmas on the same disk;
* wall time of ``plant state get`` as a whole process (median of 20);
* broker failover (two brokers, the one in use killed): kill -> first acknowledged write,
  acknowledged writes lost, writes applied twice; then etcd rows when etcd is installed.

``--fsync-delay-ms`` emulates a slower disk (SD card, eMMC: 2-20 ms per fsync) with an
LD_PRELOAD shim (bench/slow_fsync.c) in the state daemon and the plain-SQLite reference:
that is where group commit earns its keep; this machine's virtual disk syncs in ~0.1 ms.

Prints a table and the ratios sets@N / echo@N and gets@N / echo@N. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from _common import dealers, free_port, stop

from plantd.protocol import mdp
from plantd.transport import recv_frames, send_frames

STATE = b"org.plantd.State"
ECHO = b"org.plantd.module.Echo"
ECHO_POOL = b"org.plantd.bench.EchoPool"
BUSES = ("state", "event", "metric", "log")


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


# --------------------------------------------------------------------------- processes


def stack_env(home: Path, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    endpoint = tcp(free_port())
    env.update(
        PLANTD_HOME=str(home),
        # as _common set it for this process (off unless a CURVE row asks for on)
        PLANTD_SECURITY=os.environ.get("PLANTD_SECURITY", "off"),
        XDG_CONFIG_HOME=str(home / "xdg"),
        PLANTD_BROKER_ENDPOINT=endpoint,
        PLANTD_BROKER_HEALTH_PORT="0",
        PLANTD_CLIENT_ENDPOINT=endpoint,
        PLANTD_STATE_WORKERS=str(workers),
        PLANTD_STATE_LOG_LEVEL="warning",
        PLANTD_ECHO_LOG_LEVEL="warning",
        PLANTD_BROKER_LOG_LEVEL="warning",
    )
    for bus in BUSES:
        front, back = tcp(free_port()), tcp(free_port())
        env[f"PLANTD_BROKER_{bus.upper()}_FRONTEND"] = front
        env[f"PLANTD_BROKER_{bus.upper()}_BACKEND"] = back
        if bus != "log":  # the state daemon publishes on <bus>_bus (as modules do)
            env[f"PLANTD_STATE_{bus.upper()}_BUS"] = front
    env["PLANTD_CLIENT_STATE_BUS"] = env["PLANTD_BROKER_STATE_BACKEND"]
    for name in ("STATE", "ECHO"):
        env[f"PLANTD_{name}_ENDPOINT"] = endpoint
        env[f"PLANTD_{name}_HEALTH_PORT"] = "0"
        env[f"PLANTD_{name}_LOG_BUS"] = env["PLANTD_BROKER_LOG_FRONTEND"]
    return env


def start(name: str, env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    """Run daemon ``name`` and wait until its /healthz passes."""
    out = (home / f"{name}.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantd.daemons.run", name],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    facts_file = home / "run" / f"{name}.json"  # run/NAME.pid holds the pid alone
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(home / f'{name}.out').read_text()[-2000:]}")
        try:
            info = json.loads(facts_file.read_text())
            url = f"http://127.0.0.1:{info['health_port']}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if json.loads(resp.read())["status"] == "pass" and info["pid"] == proc.pid:
                    return proc
        except (OSError, ValueError, KeyError, TypeError):  # not written yet
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} not healthy in 30s")


def run_echo_pool(endpoint: str, workers: int) -> None:
    """``workers`` echo Workers in one asyncio process: the state daemon's topology with a
    handler that does nothing, i.e. the transport ceiling for the same concurrency."""
    from plantd.client import Worker

    async def echo(body: list[bytes]) -> list[bytes]:
        return body

    async def main() -> None:
        pool = []
        for _ in range(workers):
            w = Worker(endpoint, ECHO_POOL.decode())
            w.add_operation("echo", echo, raw=True)
            pool.append(w)
        await asyncio.gather(*(w.run() for w in pool))

    asyncio.run(main())


def start_echo_pool(endpoint: str, workers: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--role-echo-pool", endpoint, str(workers)],
        stdin=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # READY of every worker
    return proc


# --------------------------------------------------------------------------- load


def load(
    endpoint: str,
    service: bytes,
    body: Callable[[int], list[bytes]],
    inflight: int,
    seconds: float,
) -> tuple[float, int]:
    """``inflight`` DEALERs with one request each for ``seconds``: (requests/s, failures).

    The load generator shares the 2 cores with what it measures, so it is kept cheap:
    requests are encoded once up front and sent through plantd's Cython transport.
    """
    socks, poller = dealers(endpoint, inflight)
    requests = [mdp.encode_request(service, body(seq)) for seq in range(4096)]
    n = failed = 0
    seq = 0

    def send(s: zmq.Socket) -> None:
        nonlocal seq
        seq += 1
        send_frames(s, requests[seq % 4096])

    def done(s: zmq.Socket) -> None:
        nonlocal n, failed
        last = recv_frames(s)[-1]
        if last[:1] == b"{" and b'"success":false' in last[:40]:
            failed += 1
        n += 1

    try:
        for s in socks:  # warm-up round trip per socket
            send(s)
        for s in socks:
            if not s.poll(10_000):
                raise RuntimeError(f"no reply from {service.decode()} during warm-up")
            done(s)
        n = failed = 0
        start_t = time.perf_counter()
        end = start_t + seconds
        for s in socks:
            send(s)
        while time.perf_counter() < end:
            for s, _ in poller.poll(1000):
                done(s)
                send(s)
        elapsed = time.perf_counter() - start_t
        for s in socks:  # drain
            if s.poll(5000):
                recv_frames(s)
        return n / elapsed, failed
    finally:
        for s in socks:
            s.close(0)


def prefill(endpoint: str) -> None:
    """Write bench/k0..k999 (the keys set_body and get_body use) in 10 txns."""
    from plantd.client.state import SyncStateClient

    with SyncStateClient.connect(endpoint, timeout=30.0) as state:
        for start in range(0, 1000, 100):
            ops = [
                {"op": "set", "key": f"k{i}", "value": {"seq": i}}
                for i in range(start, start + 100)
            ]
            state.txn(ops, scope="bench")


def set_body(seq: int) -> list[bytes]:
    doc = {"service": "bench", "key": f"k{seq % 1000}", "value": {"seq": seq}}
    return [b"state-set", json.dumps(doc).encode()]


def get_body(seq: int) -> list[bytes]:
    return [b"state-get", json.dumps({"service": "bench", "key": f"k{seq % 1000}"}).encode()]


def txn_body(seq: int) -> list[bytes]:
    ops = [{"op": "set", "key": f"t{seq % 50}.{i}", "value": seq} for i in range(100)]
    return [b"txn", json.dumps({"service": "bench-txn", "ops": ops}).encode()]


def echo_body(seq: int) -> list[bytes]:
    return [b"echo", b'{"n":1}']


async def watch_latency(endpoint: str, bus: str, count: int) -> list[float]:
    """Sequential sets; for each, time from sending it to its event on the state bus."""
    from plantd.client import Subscriber
    from plantd.client.state import StateClient

    sub = Subscriber(bus, topics=["bench-watch"])
    arrived: dict[int, float] = {}
    waiters: dict[int, asyncio.Future[float]] = {}

    async def receive() -> None:
        while True:
            _topic, ev = await sub.recv()
            if isinstance(ev, dict) and ev.get("op") == "set":
                seq = ev["value"]
                arrived[seq] = time.perf_counter()
                fut = waiters.get(seq)
                if fut is not None and not fut.done():
                    fut.set_result(arrived[seq])

    rx = asyncio.create_task(receive())
    lat: list[float] = []
    try:
        async with StateClient.connect(endpoint, timeout=5.0) as state:
            await asyncio.sleep(0.5)  # subscription reaches the proxy
            for seq in range(-20, count):  # 20 warm-up sets
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiters[seq] = fut
                t0 = time.perf_counter()
                await state.set("bench-watch", "w", seq)
                t1 = await asyncio.wait_for(fut, 5.0)
                if seq >= 0:
                    lat.append(t1 - t0)
    finally:
        rx.cancel()
        sub.close()
    return lat


def plain_sqlite_with(env: dict[str, str], path: Path, seconds: float) -> float:
    """The plain-SQLite reference in a child process with ``env`` (so a --fsync-delay-ms
    shim applies to it exactly as to the state daemon)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
        " from _common import plain_sqlite; print(plain_sqlite(Path(sys.argv[2]), float(sys.argv[3])))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", code, here, str(path), str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def slow_fsync_env(tmp: Path, delay_ms: float) -> dict[str, str]:
    """Build bench/slow_fsync.c and return the env that makes fsync/fdatasync ``delay_ms``
    slower in the processes started with it (an emulated edge-device disk)."""
    lib = tmp / "slow_fsync.so"
    src = Path(__file__).with_name("slow_fsync.c")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return {"LD_PRELOAD": str(lib), "PLANTD_BENCH_FSYNC_DELAY_US": str(int(delay_ms * 1000))}


def plant_get_wall(env: dict[str, str], runs: int = 20) -> tuple[float, float]:
    """Median and min wall time of ``plant state get`` as a whole process (seconds)."""
    plant = shutil.which("plant", path=os.path.dirname(sys.executable)) or "plant"
    cmd = [plant, "state", "get", "k1", "-s", "bench", "-o", "raw"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(f"plant state get failed: {out.stderr.decode()}")
    return statistics.median(times), min(times)


def etcd_rows(root: Path, args: argparse.Namespace, n: int) -> list[tuple[str, str]]:
    """The same loads against a state daemon on the etcd backend (one local etcd member,
    Debian's etcd-server, data in ``root``), on a broker of its own."""
    root.mkdir(parents=True)
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        [
            "etcd",
            "--data-dir",
            str(root / "data"),
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--log-level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = stack_env(root, args.workers)
    env.update(
        PLANTD_STATE_BACKEND="etcd", PLANTD_STATE_ETCD_ENDPOINTS=f"http://127.0.0.1:{client}"
    )
    endpoint = env["PLANTD_BROKER_ENDPOINT"]
    procs = [etcd]
    rows: list[tuple[str, str]] = []
    try:
        procs.append(start("broker", env, root))
        procs.append(start("state", env, root))
        prefill(endpoint)
        for label, body, inflight, per in [
            ("etcd: state-set (durable), 1 client", set_body, 1, 1),
            ("etcd: state-get, 1 client", get_body, 1, 1),
            (f"etcd: state-set (durable), {n} in flight", set_body, n, 1),
            (f"etcd: state-get, {n} in flight", get_body, n, 1),
            (f"etcd: key-writes via txn of 100, {n} in flight", txn_body, n, 100),
        ]:
            rate, failed = load(endpoint, STATE, body, inflight, args.seconds)
            note = f"  ({failed} failed)" if failed else ""
            rows.append((label, f"{rate * per:12,.0f}/s{note}"))
        lat = sorted(
            asyncio.run(
                watch_latency(endpoint, env["PLANTD_BROKER_STATE_BACKEND"], args.watch_count)
            )
        )
        rows.append(
            ("etcd: watch delivery set -> bus event, p50", f"{lat[len(lat) // 2] * 1e3:12.2f} ms")
        )
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        rows.append(("etcd: watch delivery set -> bus event, p99", f"{p99 * 1e3:12.2f} ms"))
    finally:
        for p in reversed(procs):
            stop(p)
    return rows


def etcd_failover_rows(root: Path, args: argparse.Namespace, kills: int) -> list[tuple[str, str]]:
    """etcd leader loss: a 3-member cluster on loopback (tests/support/etcd.py: heartbeat
    50 ms, election timeout 500 ms), a state daemon on it; a client writes continuously and
    the leader is killed (SIGKILL) ``kills`` times (restarted between kills): the time
    from the kill to the first acknowledged write, and the writes lost (must be 0)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test helpers
    from plantd.client import SyncClient
    from tests.support.etcd import start_cluster

    cluster = start_cluster(root / "cluster", 3)
    env = stack_env(root, args.workers)
    env.update(
        PLANTD_STATE_BACKEND="etcd",
        PLANTD_STATE_ETCD_ENDPOINTS=cluster.endpoints,
        PLANTD_STATE_ETCD_TIMEOUT="1",
    )
    procs: list[subprocess.Popen[bytes]] = []
    times: list[float] = []
    acked: dict[int, int] = {}  # value -> revision
    try:
        procs.append(start("broker", env, root))
        procs.append(start("state", env, root))
        with SyncClient(env["PLANTD_BROKER_ENDPOINT"], timeout=2.0) as c:
            value = 0

            def write() -> bool:
                nonlocal value
                value += 1
                body = {"service": "failover", "key": "k", "value": value}
                try:
                    reply = json.loads(
                        c.request(STATE, b"state-set", json.dumps(body).encode())[-1]
                    )
                except Exception:  # a timeout: outcome unknown, not acknowledged
                    return False
                if reply.get("success"):
                    acked[value] = reply["data"]["revision"]
                return bool(reply.get("success"))

            for _ in range(kills):
                leader = cluster.wait_leader()
                for _ in range(50):  # a steady state before the fault
                    write()
                killed = time.monotonic()
                cluster.kill(leader)
                while not write():
                    if time.monotonic() - killed > 30:
                        raise RuntimeError("writes did not resume within 30 s")
                    time.sleep(0.01)
                times.append(time.monotonic() - killed)
                cluster.restart(leader)
            events: dict[int, Any] = {}
            since = min(acked.values()) - 1
            while True:
                page = json.loads(
                    c.request(STATE, b"watch", json.dumps({"revision": since}).encode())[-1]
                )["data"]
                events.update({e["revision"]: e.get("value") for e in page["events"]})
                since = page["revision"]
                if not page["more"]:
                    break
        lost = sum(1 for v, rev in acked.items() if events.get(rev) != v)
    finally:
        for p in reversed(procs):
            stop(p)
        cluster.close()
    spread = f"  (min {min(times):.2f}, max {max(times):.2f})"
    return [
        (
            f"etcd failover: leader kill -> first acknowledged write, median of {kills}",
            f"{statistics.median(times):12.2f} s{spread}",
        ),
        (f"etcd failover: acknowledged writes lost (of {len(acked)})", f"{lost:12d}"),
    ]


def broker_failover_rows(root: Path, args: argparse.Namespace, kills: int) -> list[tuple[str, str]]:
    """Broker loss: two brokers (separate homes), a state daemon registered with both, a
    client given both writing continuously (a new key per write); the broker the client
    uses is killed (SIGKILL) ``kills`` times (restarted between kills): the time from the
    kill to the first acknowledged write, acknowledged writes lost and writes applied twice
    (a key whose version is not 1), both must be 0."""
    from plantd.client import SyncClient
    from plantd.client.state import SyncStateClient

    homes = [root / "a", root / "b"]
    envs = []
    for home in homes:
        home.mkdir(parents=True)
        envs.append(stack_env(home, args.workers))
    both = ",".join(e["PLANTD_BROKER_ENDPOINT"] for e in envs)
    daemon = dict(envs[0], PLANTD_HOME=str(root / "daemons"), PLANTD_STATE_ENDPOINT=both)
    daemon["PLANTD_STATE_STATE_BUS"] = ",".join(e["PLANTD_BROKER_STATE_FRONTEND"] for e in envs)
    (root / "daemons").mkdir()
    brokers = [start("broker", env, home) for env, home in zip(envs, homes, strict=True)]
    procs: list[subprocess.Popen[bytes]] = []
    times: list[float] = []
    acked: dict[str, int] = {}
    try:
        procs.append(start("state", daemon, root / "daemons"))
        with SyncClient(both, timeout=5.0) as c:
            state = SyncStateClient(c)
            value = 0

            def write() -> bool:
                nonlocal value
                value += 1
                try:
                    acked[f"k{value}"] = state.set("failover", f"k{value}", value).revision
                except Exception:  # not acknowledged
                    return False
                return True

            for _ in range(kills):
                for _ in range(50):  # a steady state before the fault
                    write()
                victim = c.brokers.endpoints.index(c.endpoint)
                killed = time.monotonic()
                brokers[victim].kill()
                brokers[victim].wait()
                while not write():
                    if time.monotonic() - killed > 30:
                        raise RuntimeError("writes did not resume within 30 s")
                times.append(time.monotonic() - killed)
                brokers[victim] = start("broker", envs[victim], homes[victim])
                time.sleep(3.0)  # the state daemon registers again (backoff)
            stored = {kv.key: kv for kv in state.list_keys("failover")}
        lost = sum(
            1 for k, rev in acked.items() if k not in stored or stored[k].mod_revision != rev
        )
        twice = sum(1 for kv in stored.values() if kv.version != 1)
    finally:
        for p in reversed(procs):
            stop(p)
        for b in brokers:
            stop(b)
    spread = f"  (min {min(times):.2f}, max {max(times):.2f})"
    return [
        (
            f"broker failover: kill -9 -> first acknowledged write, median of {kills}",
            f"{statistics.median(times):12.2f} s{spread}",
        ),
        (f"broker failover: acknowledged writes lost (of {len(acked)})", f"{lost:12d}"),
        ("broker failover: writes applied twice", f"{twice:12d}"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the N-in-flight figures and the plain-SQLite reference;"
        " medians are reported (2 shared cores make single runs noisy)",
    )
    ap.add_argument("--workers", type=int, default=32, help="state daemon MDP workers")
    ap.add_argument("--watch-count", type=int, default=500)
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    ap.add_argument(
        "--fsync-delay-ms",
        type=float,
        default=0.0,
        help="emulate a slower disk: fsync/fdatasync take this much longer in the state"
        " daemon and the plain-SQLite reference (LD_PRELOAD shim, needs gcc)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PLANTD_X=V",
        help="a daemon setting for this run, e.g. PLANTD_STATE_AUDIT_WAIT=false (repeatable)",
    )
    ap.add_argument(
        "--role-echo-pool", nargs=2, metavar=("ENDPOINT", "WORKERS"), help=argparse.SUPPRESS
    )
    ap.add_argument("--no-etcd", action="store_true", help="skip the etcd backend rows")
    ap.add_argument(
        "--failover-kills",
        type=int,
        default=5,
        help="etcd leader (and broker) kills for the failover rows",
    )
    ap.add_argument(
        "--broker-failover-only", action="store_true", help="only the broker failover rows"
    )
    args = ap.parse_args()
    if args.role_echo_pool:
        run_echo_pool(args.role_echo_pool[0], int(args.role_echo_pool[1]))
        return
    if args.broker_failover_only:
        tmp = Path(tempfile.mkdtemp(prefix="plantd-bench-failover-", dir=args.dir))
        try:
            for label, value in broker_failover_rows(tmp, args, args.failover_kills):
                print(f"{label:<60}  {value}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    n = args.inflight
    tmp = Path(tempfile.mkdtemp(prefix="plantd-bench-state-", dir=args.dir))
    env = stack_env(tmp, args.workers)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("PLANTD_"):
            ap.error(f"--set {item!r}: expected PLANTD_NAME=VALUE")
        env[name] = value
    if args.fsync_delay_ms > 0:
        env.update(slow_fsync_env(tmp, args.fsync_delay_ms))
    endpoint = env["PLANTD_BROKER_ENDPOINT"]
    procs = []
    rows: list[tuple[str, str]] = []
    results: dict[str, list[float]] = {}
    failures: dict[str, int] = {}

    def record(label: str, value: float) -> None:
        results.setdefault(label, []).append(value)

    def measure(
        label: str, service: bytes, body: Callable[[int], list[bytes]], inflight: int, per: int = 1
    ) -> None:
        rate, failed = load(endpoint, service, body, inflight, args.seconds)
        record(label, rate * per)
        failures[label] = failures.get(label, 0) + failed

    echo_n, pool_n = (
        f"echo round trips, {n} in flight",
        f"echo pool ({args.workers} workers, 1 process), {n} in flight",
    )
    sets_n, gets_n = f"state-set (durable), {n} in flight", f"state-get, {n} in flight"
    txn_n, plain_l = (
        f"key-writes via txn of 100, {n} in flight",
        "plain sqlite3 durable commits, 1 row each",
    )
    try:
        procs.append(start("broker", env, tmp))
        procs.append(start("state", env, tmp))
        procs.append(start("echo", env, tmp))
        procs.append(start_echo_pool(endpoint, args.workers))
        prefill(endpoint)  # every key the gets read exists, however slow the sets were
        measure("echo round trips, 1 in flight", ECHO, echo_body, 1)
        measure("state-set (durable), 1 client", STATE, set_body, 1)
        measure("state-get, 1 client", STATE, get_body, 1)
        measure("key-writes via txn of 100, 1 client", STATE, txn_body, 1, per=100)
        for _ in range(args.rounds):  # interleaved, so every figure sees the same conditions
            measure(echo_n, ECHO, echo_body, n)
            measure(pool_n, ECHO_POOL, echo_body, n)
            measure(sets_n, STATE, set_body, n)
            measure(gets_n, STATE, get_body, n)
            measure(txn_n, STATE, txn_body, n, per=100)
            record(plain_l, plain_sqlite_with(env, Path(tmp) / "plain.db", args.seconds))
        for label, values in results.items():
            med = statistics.median(values)
            spread = f"  ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else ""
            note = f"  ({failures[label]} failed)" if failures.get(label) else ""
            rows.append((label, f"{med:12,.0f}/s{spread}{note}"))
        lat = sorted(
            asyncio.run(
                watch_latency(endpoint, env["PLANTD_BROKER_STATE_BACKEND"], args.watch_count)
            )
        )
        p50 = lat[len(lat) // 2] * 1e3
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
        rows.append(("watch delivery set -> bus event, p50", f"{p50:12.2f} ms"))
        rows.append(("watch delivery set -> bus event, p99", f"{p99:12.2f} ms"))
        med, best = plant_get_wall(env)
        rows.append(("`plant state get` whole process, median of 20", f"{med * 1e3:12.1f} ms"))
        rows.append(("`plant state get` whole process, min of 20", f"{best * 1e3:12.1f} ms"))
        if env.get("PYTHONDONTWRITEBYTECODE"):
            # this environment compiles every plantd module on each run; an installed
            # plantd has its bytecode cached: measure that too (cache kept in the temp dir)
            cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
            cached["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
            med, best = plant_get_wall(cached)
            rows.append(
                ("`plant state get`, bytecode cached, median of 20", f"{med * 1e3:12.1f} ms")
            )
        if args.failover_kills > 0:  # 0: no failover figures (nothing is written then)
            rows += broker_failover_rows(tmp / "broker-failover", args, args.failover_kills)
        if shutil.which("etcd") and not args.no_etcd:
            rows += etcd_rows(tmp / "etcd", args, n)
            if args.failover_kills > 0:
                rows += etcd_failover_rows(tmp / "etcd-failover", args, args.failover_kills)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"sqlite {sqlite3.sqlite_version}; state daemon with {args.workers} MDP workers; echo daemon"
        f" (1 worker) and an echo pool ({args.workers} workers in one process);"
        f" {args.seconds:g}s per measurement; {n}-in-flight figures and plain sqlite3: median"
        f" (min-max) of {args.rounds} interleaved rounds; dir {args.dir or tempfile.gettempdir()}"
        + (f"; fsync +{args.fsync_delay_ms:g} ms (emulated)" if args.fsync_delay_ms else "")
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")

    def ratio(a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(results[a], results[b], strict=True)]
        return f"{statistics.median(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f})"

    print("ratios, median (min-max) of the per-round ratios:")
    print(
        f"  sets@{n} / echo daemon@{n}: {ratio(sets_n, echo_n)}    gets@{n} / echo daemon@{n}: {ratio(gets_n, echo_n)}"
    )
    print(
        f"  sets@{n} / echo pool@{n}:   {ratio(sets_n, pool_n)}    gets@{n} / echo pool@{n}:   {ratio(gets_n, pool_n)}"
    )
    print(f"  sets@{n} / plain sqlite3 commits: {ratio(sets_n, plain_l)}")


if __name__ == "__main__":
    main()
