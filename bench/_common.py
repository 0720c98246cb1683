"""What the benchmarks share: free ports, stopping processes, the plain-SQLite reference."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import zmq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def plain_sqlite(path: Path, seconds: float) -> float:
    """One INSERT + COMMIT per row, WAL + synchronous=FULL: the per-write fsync floor
    (the reference group commit has to beat)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR REPLACE INTO kv VALUES(?, ?)", (f"k{n % 1000}", '{"v":1}'))
        con.execute("COMMIT")
        n += 1
    con.close()
    return n / elapsed


def dealers(endpoint: str, n: int) -> tuple[list[zmq.Socket], zmq.Poller]:
    """``n`` DEALER sockets connected to ``endpoint`` (one request in flight each), polled."""
    ctx = zmq.Context.instance()
    socks, poller = [], zmq.Poller()
    for _ in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    return socks, poller
