"""Proof of the etcd backend under faults (issue 14): one recorded run, several checks.

The run (``faulted_run``, once per module): a 3-member etcd cluster on loopback whose peer
links go through relays (tests/support/peernet.py), state daemons A and B on separate
PLANTD_HOMEs and brokers, and a concurrent load of reads, writes and compare-and-sets on
three keys through both of them, recorded with invoke/complete times. Under that load:

1. kill -9 of the etcd leader; it is restarted (same data dir) a moment after writes resume;
2. a partition of that member: its peer links are cut both ways (relays refuse and reset its
   connections; the process keeps running and serving its client port, as a host cut off
   from the others would). State daemon C is configured with that member alone: it must
   refuse every write with ``unavailable``; the majority keeps writing through A and B;
3. the partition heals: C writes again by itself.

A subscriber on the state bus (all three daemons publish there; one holds the publisher
role) records every event. The checks: no acknowledged write lost (each one is in etcd's
history at its revision, with its value), writes resumed within seconds, the history of
every key is linearizable (tests/support/linearizability.py), the minority refused and
applied nothing, and the bus delivered every revision in order, once after dropping
repeats by revision (a publisher takeover republishes at most 0.5 s; see docs/state.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from plantd.client import Client, Subscriber
from plantd.client.errors import PlantdError
from tests.state.conftest import etcd_settings
from tests.support.etcd import EtcdCluster, start_cluster
from tests.support.linearizability import ABSENT, Op, check
from tests.support.polling import WaitTimeout, wait_until_async
from tests.support.processes import http_get, read_pid_file
from tests.support.state import SERVICE, Stack, make_stack

pytestmark = pytest.mark.timeout(150)

SCOPE = "lin"
KEYS = ("k0", "k1", "k2")
MINORITY = "minority"
WORKERS = 3  # concurrent clients per daemon (A and B)
#: "writes resume within a few seconds" (election timeout 0.5 s, etcd_timeout 1 s)
RESUME_WITHIN = 5.0


@dataclass
class Attempt:
    invoke: float
    complete: float
    value: str
    doc: dict[str, Any]


@dataclass
class Run:
    """Everything the faulted run recorded."""

    ops: list[Op] = field(default_factory=list)
    acked: list[tuple[str, str, str, int]] = field(default_factory=list)  # scope, key, value, rev
    killed: str = ""
    kill_at: float = 0.0
    isolated: str = ""
    partition_at: float = 0.0
    heal_at: float = 0.0
    refused: list[Attempt] = field(default_factory=list)  # C's writes during the partition
    minority_health: list[int] = field(default_factory=list)  # C's /healthz during it
    recovered: Attempt | None = None  # C's first acknowledged write after the heal
    events: list[dict[str, Any]] = field(default_factory=list)  # the history (watch op)
    #: events as they came on the bus: (revision, op, scope, key)
    bus: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    start_rev: int = 0


async def call(client: Client, op: str, body: dict[str, Any], timeout: float = 3.0) -> Any:
    frames = await client.request(SERVICE, op.encode(), json.dumps(body).encode(), timeout=timeout)
    return json.loads(frames[-1])


class Load:
    """Random reads, writes and CAS on KEYS through one daemon, recorded as Ops."""

    def __init__(self, run: Run, client: Client, name: str) -> None:
        self.run, self.client, self.name = run, client, name
        self.stop = False
        self.counter = itertools.count()

    async def worker(self, wid: int) -> None:
        rng = random.Random(f"{self.name}{wid}")
        proc = f"{self.name}{wid}"
        seen: dict[str, tuple[Any, int]] = {}  # key -> (value, mod_revision) last read
        while not self.stop:
            key = rng.choice(KEYS)
            kind = rng.choice(["read", "read", "write", "cas", "cas"])
            if kind == "cas" and key not in seen:
                kind = "read"
            await self.one(proc, key, kind, seen)
            await asyncio.sleep(rng.uniform(0, 0.01))

    async def one(self, proc: str, key: str, kind: str, seen: dict[str, tuple[Any, int]]) -> None:
        body: dict[str, Any] = {"service": SCOPE, "key": key}
        value = f"{proc}-{next(self.counter)}"
        expected: Any = None
        if kind != "read":
            body["value"] = value
        if kind == "cas":
            expected, rev = seen[key]
            if expected is ABSENT:
                body["if_absent"] = True
            else:
                body["prev_revision"] = rev
        t0 = time.monotonic()
        try:
            doc = await call(self.client, "state-get" if kind == "read" else "state-set", body)
        except PlantdError:
            doc = {"success": False, "code": "timeout"}
        t1 = time.monotonic()
        code = doc.get("code")
        unknown = code in ("unavailable", "timeout")
        if not doc["success"] and not unknown and code not in ("not_found", "conflict"):
            raise AssertionError(f"{kind} {body}: unexpected {doc}")
        if kind == "read":
            if unknown:
                return
            got = (doc["data"]["value"], doc["data"]["mod_revision"]) if doc["success"] else None
            seen[key] = got or (ABSENT, 0)
            self.run.ops.append(Op(proc, key, "read", t0, t1, seen[key][0]))
            return
        end = None if unknown else t1
        if doc["success"]:
            rev = int(doc["data"]["revision"])
            self.run.acked.append((SCOPE, key, value, rev))
            seen[key] = (value, rev)
        if kind == "write":
            self.run.ops.append(Op(proc, key, "write", t0, end, value))
        else:
            ok = None if unknown else bool(doc["success"])
            self.run.ops.append(Op(proc, key, "cas", t0, end, value, expected, ok))


def first_ack_after(ops: list[Op], t: float) -> float | None:
    """Completion time of the first acknowledged write invoked at or after ``t``."""
    done = [
        o.complete
        for o in ops
        if o.kind != "read" and o.invoke >= t and o.complete is not None and o.ok is not False
    ]
    return min(done) if done else None


def healthz(stack: Stack) -> int:
    info = read_pid_file(stack.home, "state")
    assert info is not None
    status, _, _ = http_get(f"http://127.0.0.1:{info['health_port']}/healthz", 2.0)
    return status


def rotate(cluster: EtcdCluster, n: int) -> str:
    eps = [m.endpoint for m in cluster.members]
    return ",".join(eps[n:] + eps[:n])


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("etcd-faults")
    cluster = start_cluster(root / "etcd", 3, partitionable=True)
    stacks: list[Stack] = []
    try:
        first_leader = cluster.wait_leader()
        base = etcd_settings(cluster, etcd_timeout=1)
        a = make_stack(root / "a", **{**base, "etcd_endpoints": rotate(cluster, 0)})
        stacks.append(a)
        bus = {"PLANTD_STATE_STATE_BUS": a.broker.bus("state")[0]}  # every daemon publishes here
        b = make_stack(
            root / "b", start_state=False, **{**base, "etcd_endpoints": rotate(cluster, 1)}
        )
        stacks.append(b)
        b.start_state({**b.env, **bus})
        # C knows only the first leader: that member is killed, restarted, then cut off
        c = make_stack(
            root / "c", start_state=False, **{**base, "etcd_endpoints": first_leader.endpoint}
        )
        stacks.append(c)
        c.start_state({**c.env, **bus})
        run = Run(killed=first_leader.name, isolated=first_leader.name)
        asyncio.run(scenario(run, cluster, a, b, c))
        yield run
    finally:
        for s in stacks:
            s.close()
        cluster.close()


async def scenario(run: Run, cluster: EtcdCluster, a: Stack, b: Stack, c: Stack) -> None:
    victim = cluster.member(run.killed)
    ca, cb, cc = Client(a.endpoint), Client(b.endpoint), Client(c.endpoint)
    sub = Subscriber(a.broker.bus("state")[1], topics=[SCOPE, MINORITY])
    loads = [Load(run, ca, "A"), Load(run, cb, "B")]
    stop_bus = asyncio.Event()

    async def listen() -> None:
        while not stop_bus.is_set():
            try:
                _topic, doc = await sub.recv(timeout=0.2)
            except TimeoutError:
                continue
            run.bus.append((int(doc["revision"]), doc["op"], doc["scope"], doc.get("key")))

    try:
        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # the subscription reaches the bus proxy
        run.start_rev = int((await call(ca, "watch", {}))["data"]["revision"])
        tasks = [asyncio.create_task(ld.worker(i)) for ld in loads for i in range(WORKERS)]

        # 1. kill -9 the leader under load; restart it once writes resumed
        await asyncio.sleep(1.5)
        run.kill_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        await wait_until_async(
            lambda: first_ack_after(run.ops, run.kill_at), 15, what="writes resuming after the kill"
        )
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.sleep(1.5)  # it catches up with the log as a follower

        # 2. cut it off: C (which knows only it) must refuse; A and B keep writing
        cluster.net.isolate(victim.name)  # type: ignore[union-attr]
        run.partition_at = time.monotonic()
        for i in itertools.count():
            value = f"refused-{i}"
            body = {"service": MINORITY, "key": "m", "value": value, "request_id": value}
            t0 = time.monotonic()
            try:
                doc = await call(cc, "state-set", body)
            except PlantdError as e:
                doc = {"success": False, "code": "timeout", "error": str(e)}
            run.refused.append(Attempt(t0, time.monotonic(), value, doc))
            run.minority_health.append(await asyncio.to_thread(healthz, c))
            if time.monotonic() - run.partition_at > 3.0:
                break
            await asyncio.sleep(0.2)

        # 3. heal: C writes again by itself
        cluster.net.heal()  # type: ignore[union-attr]
        run.heal_at = time.monotonic()
        for i in itertools.count():
            value = f"healed-{i}"
            body = {"service": MINORITY, "key": "m", "value": value, "request_id": value}
            t0 = time.monotonic()
            try:
                doc = await call(cc, "state-set", body)
            except PlantdError as e:
                doc = {"success": False, "code": "timeout", "error": str(e)}
            if doc["success"]:
                run.recovered = Attempt(t0, time.monotonic(), value, doc)
                run.acked.append((MINORITY, "m", value, int(doc["data"]["revision"])))
                break
            if time.monotonic() - run.heal_at > 20:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        for ld in loads:
            ld.stop = True
        await asyncio.gather(*tasks)

        # read everything back: etcd's history of both scopes since the start
        rev = run.start_rev
        while True:
            page = (await call(ca, "watch", {"revision": rev}))["data"]
            run.events += page["events"]
            rev = page["revision"]
            if not page["more"]:
                break
        last = max(e["revision"] for e in run.events)
        with contextlib.suppress(WaitTimeout):  # the publisher (maybe a new one) catches up
            await wait_until_async(lambda: run.bus and max(run.bus)[0] >= last, 10)
        stop_bus.set()
        await listener
    finally:
        sub.close()
        for cl in (ca, cb, cc):
            await cl.close()


# --------------------------------------------------------------------------- checks


def test_leader_kill_pauses_writes_briefly_and_loses_no_acknowledged_write(
    faulted_run: Run,
) -> None:
    run = faulted_run
    first = first_ack_after(run.ops, run.kill_at)
    assert first is not None, "writes never resumed after the leader was killed"
    resumed = first - run.kill_at
    assert resumed < RESUME_WITHIN, resumed
    print(f"\nleader {run.killed} killed: first acknowledged write {resumed:.2f} s later")
    # no acknowledged write lost: each is in etcd's history at its revision, with its value
    history = {(e["scope"], e["key"], e["revision"]): e for e in run.events if e["op"] == "set"}
    assert len(run.acked) > 50, len(run.acked)
    for scope, key, value, rev in run.acked:
        e = history.get((scope, key, rev))
        assert e is not None and e["value"] == value, (scope, key, value, rev, e)


def test_history_across_both_daemons_is_linearizable_per_key(faulted_run: Run) -> None:
    ops = faulted_run.ops
    assert {o.process[0] for o in ops} == {"A", "B"}
    assert {o.kind for o in ops} == {"read", "write", "cas"}
    assert any(o.kind == "cas" and o.ok is True for o in ops)
    assert any(o.kind == "cas" and o.ok is False for o in ops)  # real contention
    result = check(ops)
    print("\n" + result.report(), f"({sum(1 for o in ops if not o.known)} outcomes unknown)")
    assert result.ok is True, result.report()
    # not vacuous on this data: a read after everything that sees an overwritten value fails
    writes = [o for o in ops if o.kind != "read" and o.complete is not None and o.ok is not False]
    old = next(
        x for x in writes if any(y.key == x.key and (x.complete or 0) < y.invoke for y in writes)
    )
    end = max(o.complete or o.invoke for o in ops) + 1
    stale = Op("Z", old.key, "read", end, end + 1, old.value)
    # never accepted; proving it impossible can hit the search bound on a long contended
    # history ("unknown", ok None), which is still not a pass
    assert check([o for o in ops if o.key == old.key] + [stale]).ok is not True


def test_partitioned_member_state_daemon_refuses_writes_majority_keeps_writing(
    faulted_run: Run,
) -> None:
    run = faulted_run
    assert len(run.refused) >= 5
    for at in run.refused:
        assert at.doc["success"] is False and at.doc["code"] == "unavailable", at.doc
        assert "etcd" in at.doc["error"], at.doc
        assert at.complete - at.invoke < 2.5, "refused promptly (etcd_timeout 1 s)"
    # its /healthz fails while cut off (the store's probe runs every second)
    assert run.minority_health[-3:] and 200 not in run.minority_health[-3:], run.minority_health
    # nothing the minority refused was applied, then or after the heal
    values = {e.get("value") for e in run.events}
    assert not values & {at.value for at in run.refused}
    # the majority kept acknowledging writes through both daemons during the partition
    during = [
        o.process[0]
        for o in run.ops
        if o.kind != "read"
        and o.complete is not None
        and run.partition_at + 1.0 <= o.invoke
        and o.complete <= run.heal_at
        and o.ok is not False
    ]
    assert {"A", "B"} <= set(during), during
    assert run.recovered is not None, "the minority's daemon never wrote again after the heal"
    print(
        f"\npartition of {run.isolated}: {len(run.refused)} writes refused, majority acked"
        f" {len(during)}; minority writes again {run.recovered.complete - run.heal_at:.2f} s"
        " after the heal"
    )


def test_state_bus_delivered_every_revision_once_in_order_across_the_faults(
    faulted_run: Run,
) -> None:
    run = faulted_run
    expected = sorted({e["revision"] for e in run.events})
    assert expected and expected[0] > run.start_rev
    delivered, last, seen, repeats = [], 0, set(), 0
    for event in run.bus:
        rev = event[0]
        if event in seen:
            repeats += 1  # a takeover republishes what the old publisher may have sent
            continue
        assert rev >= last, f"revision {rev} arrived after {last}: out of order"
        seen.add(event)
        if rev > last:
            delivered.append(rev)
            last = rev
    got = [r for r in delivered if r > run.start_rev]
    assert got == expected, (len(got), len(expected), sorted(set(expected) - set(got))[:10])
    print(f"\nbus: {len(expected)} revisions in order, {repeats} repeats dropped by revision")
