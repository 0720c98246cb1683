"""The etcd backend beyond the shared service suite (tests/state/test_service.py runs every
operation on both backends): etcd down (every request ``unavailable``, /healthz fails with
the reason, recovery by itself), and two state daemons on one etcd (any answers, the state
bus carries every revision in order while the publishing daemon is killed).

Real processes: etcd members, a broker, state daemons, on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantd.client.errors import PlantdError
from tests.state.conftest import etcd_settings
from tests.support.etcd import EtcdCluster, start_cluster
from tests.support.keyring import install_keyring
from tests.support.polling import wait_until
from tests.support.processes import http_get, read_pid_file
from tests.support.state import Stack, StateProcess, data, make_stack, request, state_settings

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = start_cluster(tmp_path / "etcd")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def stack(tmp_path: Path, cluster: EtcdCluster) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home", **etcd_settings(cluster, etcd_timeout=1))
    try:
        yield s
    finally:
        s.close()


def healthz(home: Path) -> tuple[int, dict[str, Any]]:
    info = read_pid_file(home, "state")
    assert info is not None
    status, _, body = http_get(f"http://127.0.0.1:{info['health_port']}/healthz", 2.0)
    return status, json.loads(body)


def test_etcd_down_every_request_unavailable_then_recovers(
    stack: Stack, cluster: EtcdCluster
) -> None:
    with stack.client(timeout=10) as c:
        before = data(c, "state-set", {"service": "plant", "key": "k", "value": 1})
        cluster.kill(cluster.members[0])
        for op, body in [
            ("state-set", {"service": "plant", "key": "k", "value": 2, "request_id": "w2"}),
            ("state-get", {"service": "plant", "key": "k"}),
            ("txn", {"service": "plant", "ops": [{"op": "delete", "key": "k"}]}),
            ("list-keys", {"service": "plant"}),
            ("watch", {"revision": 0}),
        ]:
            doc = request(c, op, body)
            assert doc["success"] is False and doc["code"] == "unavailable", (op, doc)
            assert "etcd" in doc["error"] and doc["reason"], doc

        def failing() -> str | None:
            status, body = healthz(stack.home)
            check = body.get("checks", {}).get("state:store", [{}])
            text = json.dumps(check)
            return text if status != 200 and "etcd" in text else None

        assert "unavailable" in wait_until(failing, 10, what="/healthz failing")
        assert request(c, "health", {})["status"] == "fail"

        cluster.restart(cluster.members[0])  # same data dir: nothing acknowledged was lost

        def serving() -> dict[str, Any] | None:
            doc = request(
                c, "state-set", {"service": "plant", "key": "k", "value": 2, "request_id": "w2"}
            )
            return doc if doc["success"] else None

        after = wait_until(serving, 20, interval=0.2, what="writes to resume")["data"]
        assert after["version"] == 2 and after["revision"] > before["revision"]
        assert data(c, "state-get", {"service": "plant", "key": "k"})["value"] == 2
        wait_until(lambda: healthz(stack.home)[0] == 200, 10, what="/healthz passing again")


def test_two_daemons_share_one_etcd_and_the_bus_survives_the_publisher(
    tmp_path: Path, stack: Stack
) -> None:
    """Two state daemons (separate PLANTD_HOMEs) on one etcd prefix: both serve, and the
    state bus carries every write's revision, in order, across a kill -9 of the first
    daemon (the publisher: it campaigned first)."""
    from plantd.client import Subscriber

    home2 = tmp_path / "home2"
    home2.mkdir()
    install_keyring(home2)  # the same keys as the first home (one broker, security on)
    env2 = state_settings({**stack.env, "PLANTD_HOME": str(home2)})
    second = StateProcess(env2, home2, tag="state-b").wait_ready()
    first = stack.state
    revisions: list[int] = []
    seen: list[int] = []

    async def scenario() -> None:
        sub = Subscriber(stack.bus()[1], topics=["load"])
        try:
            await asyncio.sleep(0.3)
            deadline = time.monotonic() + 40
            loop = asyncio.get_running_loop()
            for i in range(60):
                if i == 20:
                    first.kill()  # the publisher dies under load
                revisions.append(await loop.run_in_executor(None, write_once, stack, i, deadline))
            # the new publisher takes over after the lease (2 s) and resumes
            end = time.monotonic() + 15
            while time.monotonic() < end and (not seen or max(seen) < revisions[-1]):
                try:
                    _topic, doc = await sub.recv(timeout=1.0)
                except TimeoutError:
                    continue
                if doc.get("op") == "set":
                    seen.append(doc["revision"])
        finally:
            sub.close()

    try:
        asyncio.run(scenario())
    finally:
        second.stop()
    # a subscriber that drops what it already has (as StateClient.watch does) gets every
    # write's revision exactly once, in order: no gap across the takeover
    delivered, last = [], 0
    for rev in seen:
        if rev > last:
            delivered.append(rev)
            last = rev
    assert delivered == revisions, (len(delivered), len(revisions), len(seen))


def write_once(stack: Stack, value: int, deadline: float) -> int:
    """One acknowledged write (retried with its request_id while a daemon dies)."""
    with stack.client(timeout=3.0) as c:
        while True:
            try:
                doc = request(
                    c,
                    "state-set",
                    {"service": "load", "key": "k", "value": value, "request_id": f"w{value}"},
                )
                if doc["success"]:
                    return int(doc["data"]["revision"])
            except PlantdError:
                pass
            assert time.monotonic() < deadline, "writes never resumed"
            time.sleep(0.05)


def test_replace_import_deletes_by_ranges_around_the_kept_keys() -> None:
    """An import with ``replace`` deletes what a chunk does not overwrite with at most one
    range per gap between kept keys, never covering a kept key."""
    from plantd.state.etcd.store import _gaps

    stored = [b"p/a", b"p/b", b"p/c", b"p/d", b"p/e", b"q/x"]
    ranges = _gaps(stored, [b"p/b", b"p/d"], b"p/")
    assert ranges == [(b"p/", b"p/b"), (b"p/b\x00", b"p/d"), (b"p/d\x00", b"p0")]
    covered = [x for x in stored if any(a <= x < b for a, b in ranges)]
    assert covered == [b"p/a", b"p/c", b"p/e"]
    assert _gaps(stored, [b"p/a", b"p/b"], b"p/") == [(b"p/b\x00", b"p0")]
    assert _gaps(stored, [b"p/a", b"p/b", b"p/c", b"p/d", b"p/e"], b"p/") == []


def test_watch_starts_above_a_compaction_other_prefixes_caused(
    stack: Stack, cluster: EtcdCluster
) -> None:
    """A prefix that never changed has no change marker: ``watch {}`` once answered revision
    0 there, and ``watch {revision: 0}`` was then refused as compacted when another store on
    the same cluster had compacted etcd's history. It now answers etcd's revision, from which
    the watch works."""
    from plantd.state.etcd.store import EtcdStore

    async def compact_elsewhere() -> int:
        other = await EtcdStore.open(cluster.endpoints, prefix="/other/", history_size=5)
        try:
            for i in range(20):
                await other.set("s", "k", i)
            await other.changes_since(other.revision - 1)  # the compaction task has run
            return other.compact_revision
        finally:
            await other.close()

    compacted = asyncio.run(compact_elsewhere())
    assert compacted > 0
    with stack.client(timeout=10) as c:
        start = data(c, "watch", {})["revision"]
        assert start > compacted
        page = data(c, "watch", {"revision": start})
        assert page["events"] == [] and page["revision"] == start
        written = data(c, "state-set", {"service": "plant", "key": "k", "value": 1})
        page = data(c, "watch", {"revision": start})
        events = [(e["revision"], e["op"]) for e in page["events"]]
        assert events == [(written["revision"], "create-scope"), (written["revision"], "set")]
