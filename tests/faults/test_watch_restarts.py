"""Watchers across a state-daemon kill -9 and a broker restart: the change stream stays
gap-free and duplicate-free (every revision exactly once, in order)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import start_broker
from tests.support.bus import wait_subscribed
from tests.support.processes import JsonLines, finish
from tests.support.state import make_stack, watch_proc, write_until_ok

pytestmark = pytest.mark.timeout(120)

SCOPE = "org.plantd.Client"


def test_watch_is_gap_free_across_state_and_broker_restarts(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    try:
        first = write_until_ok(stack, SCOPE, 0, time.monotonic() + 10)
        proc = watch_proc(stack, "--revision", str(first), "--count", "12")
        lines = JsonLines(proc)
        wait_subscribed(stack.bus()[0], "")  # the watcher's subscription reached the proxy
        deadline = time.monotonic() + 60
        revisions = [write_until_ok(stack, SCOPE, v, deadline) for v in (1, 2, 3, 4)]

        stack.state.kill()  # kill -9 of the state daemon between writes
        stack.start_state()
        revisions += [write_until_ok(stack, SCOPE, v, deadline) for v in (5, 6, 7, 8)]

        env = stack.broker.env
        stack.broker.proc.kill()
        stack.broker.proc.wait(timeout=5)
        time.sleep(1.0)
        stack.broker = start_broker(env, stack.home, tag="broker2")
        revisions += [write_until_ok(stack, SCOPE, v, deadline) for v in (9, 10, 11, 12)]

        events = lines.take(12, timeout=30)
        rc, err = finish(proc)
        assert rc == 0, err
        seen = [e["revision"] for e in events]
        assert seen == revisions, (seen, revisions)  # every acknowledged write, once, in order
        assert [e["value"] for e in events] == list(range(1, 13))
        print(f"FIGURE watch_restarts revisions={seen[0]}..{seen[-1]} stderr={err.strip()!r}")
    finally:
        stack.close()
