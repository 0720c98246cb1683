"""The state daemon as a process: persistence across restarts, one daemon per database,
refusing damaged files untouched, clean close on SIGTERM and the crash-after-commit
failpoint (a retry with the same request_id is applied exactly once)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import clean_env
from tests.support.state import (
    SERVICE,
    Stack,
    StateProcess,
    data,
    make_stack,
    request,
    state_settings,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home")
    try:
        yield s
    finally:
        s.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_survives_a_restart(stack: Stack) -> None:
    with stack.client() as c:
        s = data(c, "state-set", {"service": "plc1", "key": "setpoint", "value": {"t": 21.5}})
        data(
            c,
            "txn",
            {
                "service": "plc1",
                "ops": [{"op": "set", "key": f"k{i}", "value": i} for i in range(10)],
            },
        )
        head = data(c, "health", {})["revision"]
    assert stack.state.stop() == 0
    assert "closed at revision" in stack.state.text()
    stack.start_state()
    with stack.client() as c:
        got = data(c, "state-get", {"service": "plc1", "key": "setpoint"})
        assert got["value"] == {"t": 21.5} and got["mod_revision"] == s["revision"]
        assert len(data(c, "list-keys", {"service": "plc1"})["keys"]) == 11
        assert data(c, "health", {})["revision"] == head
        nxt = data(c, "state-set", {"service": "plc1", "key": "setpoint", "value": 1})
        assert nxt["revision"] == head + 1  # revisions continue, never reused


def test_sigterm_closes_the_store(stack: Stack) -> None:
    with stack.client() as c:
        data(c, "state-set", {"service": "s", "key": "k", "value": 1})
    assert stack.state.stop() == 0
    # the lock is released and the WAL checkpointed: the file opens as a plain database
    con = sqlite3.connect(stack.db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT value FROM kv WHERE key='k'").fetchone()[0] == "1"
    finally:
        con.close()
    wal = stack.db.with_name("state.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_second_daemon_in_the_same_home_is_refused(stack: Stack) -> None:
    second = StateProcess(stack.env, stack.home, tag="second")
    rc = second.wait_exit()
    assert rc == 6, second.text()
    assert f"state is already running (pid {stack.state.pid})" in second.text()
    assert stack.state.proc.poll() is None


def test_second_daemon_on_the_same_file_is_refused(stack: Stack, tmp_path: Path) -> None:
    """Another PLANTD_HOME (no pid file to see) but the same database: the store lock says no."""
    home2 = tmp_path / "home2"
    home2.mkdir()
    env = state_settings(clean_env(home2))
    env.update(
        PLANTD_STATE_DB=str(stack.db),
        PLANTD_STATE_ENDPOINT=stack.endpoint,
        PLANTD_STATE_LOG_BUS="",
        PLANTD_STATE_STATE_BUS=stack.bus()[0],
    )
    before = digest(stack.db)
    second = StateProcess(env, home2, tag="second")
    rc = second.wait_exit()
    text = second.text()
    assert rc != 0, text
    assert "refusing to start" in text and "already open by another store" in text, text
    assert f"pid {stack.state.pid}" in text
    assert digest(stack.db) == before
    with stack.client() as c:  # the first daemon is unaffected
        assert request(c, "health", {})["status"] == "pass"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"this is not a database at all" * 10, "is not an SQLite database"),
        (b"", None),  # an empty file is a new database, not an error
    ],
)
def test_garbage_file_is_refused_untouched(
    tmp_path: Path, content: bytes, fragment: str | None
) -> None:
    stack = make_stack(tmp_path / "home", start_state=False)
    try:
        stack.db.parent.mkdir(parents=True, exist_ok=True)
        stack.db.write_bytes(content)
        proc = stack.start_state(wait=False)
        if fragment is None:
            proc.wait_ready()
            return
        rc = proc.wait_exit()
        assert rc != 0
        assert fragment in proc.text() and "refusing to start" in proc.text()
        assert stack.db.read_bytes() == content
    finally:
        stack.close()


def test_damaged_database_is_refused_untouched(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    try:
        with stack.client() as c:
            for i in range(50):
                data(c, "state-set", {"service": "s", "key": f"k{i}", "value": "x" * 500})
        assert stack.state.stop() == 0
        raw = bytearray(stack.db.read_bytes())
        assert len(raw) > 8192
        raw[4096:8192] = b"\xa5" * 4096  # scribble over a whole b-tree page
        stack.db.write_bytes(bytes(raw))
        before = digest(stack.db)
        proc = stack.start_state(wait=False)
        rc = proc.wait_exit()
        text = proc.text()
        assert rc != 0, text
        assert "refusing to start" in text and str(stack.db) in text, text
        assert "the file was not modified" in text
        assert digest(stack.db) == before
    finally:
        stack.close()


def test_crash_after_commit_then_retry_is_applied_exactly_once(tmp_path: Path) -> None:
    from plantd.client.errors import RequestTimeout, ServiceUnavailable

    stack = make_stack(tmp_path / "home", start_state=False)
    try:
        armed = dict(stack.env, PLANTD_STATE_FAILPOINT="crash-after-commit")
        proc = stack.start_state(armed)
        body = {"service": "fp", "key": "counter", "value": 1, "request_id": "req-42"}
        with stack.client(timeout=3.0) as c, pytest.raises((ServiceUnavailable, RequestTimeout)):
            request(c, "state-set", body)
        assert proc.wait_exit() == 137
        assert "FAILPOINT crash-after-commit" in proc.text()

        stack.start_state()  # not armed
        with stack.client() as c:
            got = data(c, "state-get", {"service": "fp", "key": "counter"})
            assert got["value"] == 1 and got["version"] == 1  # the write did commit
            retry = data(c, "state-set", body)  # the client's retry: same request id
            assert retry["mod_revision"] == got["mod_revision"]
            again = data(c, "state-get", {"service": "fp", "key": "counter"})
            assert again["version"] == 1 and again["mod_revision"] == got["mod_revision"]
            assert data(c, "health", {})["revision"] == got["revision"]
            c.request(SERVICE, b"health", b"{}")
    finally:
        stack.close()


def test_unknown_failpoint_is_a_startup_error(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home", start_state=False)
    try:
        proc = stack.start_state(dict(stack.env, PLANTD_STATE_FAILPOINT="explode"), wait=False)
        assert proc.wait_exit() != 0
        assert "unknown failpoint 'explode'" in proc.text()
    finally:
        stack.close()
