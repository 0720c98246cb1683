"""What the benchmarks share: free ports, stopping processes, the plain-SQLite reference,
and the security mode of the processes they start.

Benchmarks run their own brokers with bare pyzmq peers on loopback, so they default to the
insecure mode (``PLANTD_SECURITY=off``); a benchmark that measures CURVE sets ``on`` and a
keyring for the processes of that row (:func:`secure_env`)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import zmq

os.environ.setdefault("PLANTD_SECURITY", "off")


def secure_env(home: Path) -> dict[str, str]:
    """The environment of a process that runs with CURVE on the keyring in ``home`` (made by
    :func:`make_keyring`), as its ``admin``."""
    ring = home / "identity"
    return dict(
        os.environ,
        PLANTD_SECURITY="on",
        PLANTD_HOME=str(home),
        PLANTD_CLIENT_IDENTITY=str(ring / "secrets" / "admin.key_secret"),
        PLANTD_CLIENT_BROKER_KEY=str(ring / "broker.key"),
    )


def make_keyring(home: Path) -> Path:
    """``plant identity init`` in ``home``: the broker's keys and an admin."""
    from plantd.identity.principals import init_keyring
    from plantd.security.keys import Keyring

    init_keyring(Keyring.at_home(home))
    return home


def secure_client(sock: zmq.Socket[Any]) -> None:
    """CURVE client options on a bare socket when this process runs secure (before connect)."""
    if os.environ.get("PLANTD_SECURITY") == "on":
        from plantd.security.settings import default_client

        default_client().apply(sock)


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
        secure_client(s)
        s.connect(endpoint)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    return socks, poller
