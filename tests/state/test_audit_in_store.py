"""The state audit chain inside state.db: rows committed with their writes (kill -9 keeps
write and row together), the old value taken from the write's own lookup, the keyring's
audit.db of the previous layout still listed and verified, merged listing and per-chain
verification (real files, a real daemon process for the crash)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plantd.client.errors import PlantdError
from plantd.identity.audit import AuditLog, host_sources, merged_query, verify_sources
from plantd.identity.principals import init_keyring
from plantd.security.caller import Caller, serving
from plantd.security.keys import Keyring
from plantd.state import StateStore
from plantd.state.audit import StoreAudit
from plantd.state.service import StateService
from tests.support.state import data, make_stack

ALICE = Caller("alice", ("operator",), "tcp://10.0.0.7:5555")


async def test_old_layout_rows_stay_listed_and_chains_merge(tmp_path: Path) -> None:
    ring = Keyring.at_home(tmp_path / "home")
    init_keyring(ring)
    with AuditLog(ring.audit) as old:  # what the state daemon wrote before the move
        for i in range(3):
            old.append(
                principal="bob",
                service="org.plantd.State",
                operation="set",
                scope="line1",
                key="speed",
                old=i or None,
                new=i + 1,
                revision=i + 1,
                outcome="ok",
                ts=time.time() - 100 + i,
            )
    store = await StateStore.open(tmp_path / "state.db")
    audit = await StoreAudit.open(store, service="org.plantd.State", keyring_audit=ring.audit)
    service = StateService(store, audit=audit)
    try:
        with serving(ALICE):
            for v in (10, 11):
                body = json.dumps({"service": "line1", "key": "speed", "value": v})
                doc = await service.dispatch("set", [body.encode()])
                assert doc["success"] is True, doc
    finally:
        await store.close()
        await audit.close()
    sources = host_sources(ring.audit)
    assert [s.name for s in sources] == ["keyring", "org.plantd.State"]
    rows = merged_query(sources, key="speed").rows
    assert [(r["source"], r["principal"], r["old"], r["new"]) for r in rows] == [
        ("keyring", "bob", None, 1),
        ("keyring", "bob", 1, 2),
        ("keyring", "bob", 2, 3),
        ("org.plantd.State", "alice", None, 10),  # the new store never saw 1..3
        ("org.plantd.State", "alice", 10, 11),
    ]
    # pages of 2 follow the per-source cursor: every row once, in time order
    seen, after, pages = [], None, 0
    while True:
        page = merged_query(sources, limit=2, after=after)
        seen += [(r["source"], r["seq"]) for r in page.rows]
        pages += 1
        if not page.more:
            break
        after = page.next
        assert isinstance(after, dict)
    assert seen == [(r["source"], r["seq"]) for r in rows] and pages == 3
    verified = verify_sources(sources)
    assert verified["ok"] is True and verified["rows"] == 5
    # a tampered row in state.db is named with its chain; the keyring's still verifies
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE audit SET principal = 'mallory' WHERE seq = 1")
    db.commit()
    db.close()
    broken = verify_sources(sources)
    assert (broken["ok"], broken["source"], broken["first_bad_seq"]) == (
        False,
        "org.plantd.State",
        1,
    )
    assert [s["ok"] for s in broken["sources"]] == [True, False]


async def test_rows_need_no_read_before_the_write(tmp_path: Path) -> None:
    """The old value comes from the batch's lookup: no store.get per audited write."""
    ring = Keyring.at_home(tmp_path / "home")
    init_keyring(ring)
    store = await StateStore.open(tmp_path / "state.db")
    audit = await StoreAudit.open(store, service="org.plantd.State", keyring_audit=ring.audit)
    service = StateService(store, audit=audit)
    gets = 0
    real_get = store.get

    async def counting_get(scope: str, key: str) -> dict[str, Any]:
        nonlocal gets
        gets += 1
        return await real_get(scope, key)

    store.get = counting_get  # type: ignore[method-assign]
    try:
        with serving(ALICE):
            for op, body in [
                ("set", {"service": "s", "key": "a", "value": {"x": 1}}),
                ("txn", {"ops": [{"op": "set", "scope": "s", "key": "a", "value": 2},
                                 {"op": "set", "scope": "s", "key": "b", "value": 3},
                                 {"op": "check", "scope": "s", "key": "c", "if_absent": True}]}),
                ("delete", {"service": "s", "key": "b"}),
            ]:  # fmt: skip
                doc = await service.dispatch(op, [json.dumps(body).encode()])
                assert doc["success"] is True, doc
    finally:
        await store.close()
        await audit.close()
    assert gets == 0
    rows = merged_query(host_sources(ring.audit)).rows
    assert [(r["operation"], r["key"], r["old"], r["new"], r["revision"]) for r in rows] == [
        ("set", "a", None, {"x": 1}, 1),
        ("txn", "a", {"x": 1}, 2, 2),
        ("txn", "b", None, 3, 2),
        ("delete", "b", 3, None, 3),
    ]
    assert verify_sources(host_sources(ring.audit))["ok"] is True


@pytest.mark.timeout(120)
def test_kill_9_during_writes_keeps_every_write_with_its_row(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    acked: list[tuple[str, int, int]] = []  # (key, value, revision)
    stop = threading.Event()
    lock = threading.Lock()

    def writer(n: int) -> None:
        with stack.client(timeout=2.0) as c:
            for value in range(100_000):
                if stop.is_set():
                    return
                try:
                    reply = data(
                        c, "state-set", {"service": "crash", "key": f"k{n}", "value": value}
                    )
                except (PlantdError, AssertionError):
                    return  # the daemon is gone: this write is not acknowledged
                with lock:
                    acked.append((f"k{n}", value, int(reply["revision"])))

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        stack.state.kill()  # SIGKILL mid-stream
        stop.set()
        for t in threads:
            t.join(10)
        assert len(acked) >= 300
        db = sqlite3.connect(f"{stack.db.resolve().as_uri()}?mode=ro", uri=True)
        audited = {
            (r[0], r[1], json.loads(r[2]))
            for r in db.execute(
                "SELECT revision, key, new FROM audit WHERE scope = 'crash' AND outcome = 'ok'"
            )
        }
        written = {
            (r[0], r[1], json.loads(r[2]))
            for r in db.execute("SELECT revision, key, value FROM changes WHERE scope = 'crash'"
                                " AND op = 'set'")
        }  # fmt: skip
        db.close()
        # every acknowledged write has its row; no row without its write, no write without
        assert {(rev, key, value) for key, value, rev in acked} <= audited
        assert audited == written
        # the restarted daemon recovers the chain's end and extends it
        stack.start_state()
        with stack.client() as c:
            data(c, "state-set", {"service": "crash", "key": "after", "value": 1})
        time.sleep(0.6)  # the sidecar follows within 0.25 s
        sources = host_sources(Keyring.at_home(stack.home).audit)
        result = verify_sources(sources)
        assert result["ok"] is True, result
        assert merged_query(sources, key="after").rows[0]["new"] == 1
    finally:
        stop.set()
        stack.close()
