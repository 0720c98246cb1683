"""Write storm with ``kill -9`` of the state daemon at random moments.

Writers retry every unacknowledged write with the same request_id until it is acknowledged.
After each restart: every acknowledged write is present (a key holds the acknowledged
sequence number or a later one), revisions never go backwards, and at the end SQLite's
``PRAGMA integrity_check`` is ok. 10 trials by default (< 60 s); PLANTD_LONG_TESTS=1 runs
more.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.state import data, make_stack, request

LONG = os.environ.get("PLANTD_LONG_TESTS", "").strip() not in ("", "0")
TRIALS = 40 if LONG else 10
WRITERS = 4
KEYS_PER_WRITER = 8

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600 if LONG else 120)]


class Writer(threading.Thread):
    """Sequential writes ``w<i>.<seq % KEYS>`` = seq; acks recorded only when acknowledged."""

    def __init__(self, index: int, endpoint: str, stop: threading.Event) -> None:
        super().__init__(name=f"writer{index}", daemon=True)
        self.index = index
        self.endpoint = endpoint
        self.stop_event = stop
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[int, int]] = {}  # key -> (seq, mod_revision)
        self.last_revision = 0
        self.acks = 0
        self.retries = 0
        self.errors: list[str] = []

    def run(self) -> None:
        from plantd.client import SyncClient
        from plantd.client.errors import PlantdError

        seq = 0
        with SyncClient(self.endpoint, timeout=2.0) as c:
            while not self.stop_event.is_set():
                seq += 1
                key = f"w{self.index}.{seq % KEYS_PER_WRITER}"
                body = {
                    "service": "storm",
                    "key": key,
                    "value": seq,
                    "request_id": f"w{self.index}-{seq}",
                }
                while True:
                    try:
                        doc = request(c, "state-set", body)
                    except PlantdError:
                        self.retries += 1  # daemon down: retry the SAME request id
                        if self.stop_event.wait(0.02):
                            return
                        continue
                    break
                if not doc.get("success"):
                    self.errors.append(f"{body}: {doc}")
                    return
                rev = doc["data"]["mod_revision"]
                with self.lock:
                    if rev <= self.last_revision:
                        self.errors.append(
                            f"revision went backwards: {rev} after {self.last_revision}"
                        )
                    self.last_revision = rev
                    self.acked[key] = (seq, rev)
                    self.acks += 1

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self.lock:
            return dict(self.acked)


def read(c: Any, op: str, body: dict[str, Any]) -> Any:
    """A read, retried while the broker still routes to the killed daemon's workers (until
    their heartbeats expire it answers 503/504)."""
    from plantd.client.errors import ServiceUnavailable

    deadline = time.monotonic() + 10
    while True:
        try:
            return data(c, op, body)
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def verify(c: Any, writers: list[Writer], floor: int) -> int:
    """Every acknowledged write is present; the head revision is not below ``floor``."""
    snaps = [w.snapshot() for w in writers]  # taken BEFORE reading: acks only grow
    head = read(c, "health", {})["revision"]
    assert head >= floor, f"revision went backwards: {head} < {floor}"
    stored = {k["key"]: k for k in read(c, "list-keys", {"service": "storm"})["keys"]}
    for snap in snaps:
        for key, (seq, rev) in snap.items():
            assert key in stored, f"acknowledged {key}={seq} lost"
            assert stored[key]["value"] >= seq, (
                f"{key}: acknowledged {seq}, found {stored[key]['value']}"
            )
            assert stored[key]["mod_revision"] >= rev
            assert head >= rev
    return head


def test_write_storm_with_kill_9(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    stop = threading.Event()
    writers = [Writer(i, stack.endpoint, stop) for i in range(WRITERS)]
    seed = int(os.environ.get("PLANTD_STORM_SEED", time.time_ns()))
    print(f"SEED PLANTD_STORM_SEED={seed}")  # replay a failure with this in the environment
    rng = random.Random(seed)
    started = time.monotonic()
    try:
        for w in writers:
            w.start()
        floor = 0
        with stack.client() as c:
            for _trial in range(TRIALS):
                time.sleep(rng.uniform(0.05, 0.5))  # a random moment in the storm
                stack.state.kill()
                stack.start_state()
                floor = verify(c, writers, floor)
                for w in writers:
                    assert not w.errors, w.errors
            time.sleep(0.3)
            stop.set()
            for w in writers:
                w.join(timeout=10)
                assert not w.is_alive()
                assert not w.errors, w.errors
            verify(c, writers, floor)
        total = sum(w.acks for w in writers)
        assert total > TRIALS  # the storm did write through the crashes
        assert sum(w.retries for w in writers) > 0  # and crashes did hit writes
        assert stack.state.stop() == 0
        con = sqlite3.connect(f"{stack.db.as_uri()}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            con.close()
        print(
            f"storm: {TRIALS} kills, {total} acknowledged writes in {time.monotonic() - started:.1f}s"
        )
    finally:
        stop.set()
        stack.close()
