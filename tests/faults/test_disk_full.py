"""Disk full for the state daemon (RLIMIT_FSIZE on its process, no root needed): writes get
an error naming the cause, reads and health keep working, writes succeed once space returns,
and nothing acknowledged is lost."""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

import pytest

from tests.support.state import Stack, data, make_stack, request

pytestmark = pytest.mark.timeout(90)

SCOPE = "org.plantd.faults.disk"


def test_disk_full_refuses_writes_keeps_reads_and_recovers(tmp_path: Path) -> None:
    stack: Stack = make_stack(tmp_path / "home")
    try:
        with stack.client() as c:
            acked = {}
            for i in range(20):
                data(c, "state-set", {"service": SCOPE, "key": f"k{i}", "value": i})
                acked[f"k{i}"] = i
            pid = stack.state.pid
            used = sum(p.stat().st_size for p in stack.db.parent.glob("state.db*"))
            # the disk is "full" a little above what the files use now (soft limit only,
            # so it can be raised again without privileges)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (used + 64 * 1024, resource.RLIM_INFINITY))
            big = "x" * 200_000
            failures = []
            for i in range(10):
                doc = request(c, "state-set", {"service": SCOPE, "key": f"big{i}", "value": big})
                if doc.get("success"):
                    acked[f"big{i}"] = big
                else:
                    failures.append(doc)
            assert failures, "no write failed although the file size limit was reached"
            assert all(f["code"] == "storage_error" for f in failures), failures
            print(f"FIGURE disk_full_error={failures[0]['error']!r}")
            assert any(
                word in failures[0]["error"].lower() for word in ("full", "disk", "large", "i/o")
            ), failures[0]
            # reads and health keep working while writes fail
            assert data(c, "state-get", {"service": SCOPE, "key": "k3"})["value"] == 3
            health = request(c, "health", {})
            assert health.get("success", True) is not False, health

            resource.prlimit(
                pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            data(c, "state-set", {"service": SCOPE, "key": "after", "value": "space is back"})
            acked["after"] = "space is back"
            for key, value in acked.items():  # nothing acknowledged was lost
                assert data(c, "state-get", {"service": SCOPE, "key": key})["value"] == value
        assert stack.state.proc.poll() is None  # the daemon never died
    finally:
        stack.close()
    with sqlite3.connect(stack.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
