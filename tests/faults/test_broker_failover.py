"""Two brokers (issue 14): kill -9 one under a write load.

Real processes on loopback: two brokers in separate PLANTD_HOMEs sharing one keyring, a
state daemon and an echo module registered with both, clients given both endpoints. The
writes continue through the other broker (bounded: 2 production heartbeat intervals), no
acknowledged write is lost, none is applied twice (each write creates its own key: a
second application would make its version 2), the state bus delivers every write once to
a subscriber of both buses, and the daemons' health says one broker of two is gone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plantd.client import Client, StateClient, Subscriber, SyncClient
from tests.support.broker import BrokerProcess, broker_env, start_broker
from tests.support.polling import wait_until
from tests.support.processes import (
    START_TIMEOUT,
    clean_env,
    http_get,
    kill_pid,
    read_pid_file,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(120)

#: the production heartbeat interval: clients must be through the other broker within 2
HEARTBEAT = 2.5


@dataclass
class TwoBrokers:
    a: BrokerProcess
    b: BrokerProcess
    env: dict[str, str]  # daemons and clients: both brokers, both buses
    home: Path
    daemons: list[subprocess.Popen[bytes]]

    @property
    def endpoints(self) -> str:
        return f"{self.a.endpoint},{self.b.endpoint}"

    def start(self, name: str) -> None:
        out = self.home / f"{name}.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantd.daemons.run", name],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.daemons.append(proc)
        wait_healthy(proc, self.home, name, out, START_TIMEOUT)

    def health(self, name: str) -> dict[str, Any]:
        info = read_pid_file(self.home, name)
        assert info is not None
        _, _, body = http_get(f"http://127.0.0.1:{info['health_port']}/healthz", 2.0)
        doc: dict[str, Any] = json.loads(body)
        return doc


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[TwoBrokers]:
    started: list[BrokerProcess] = []
    two: TwoBrokers | None = None
    try:
        for tag in ("a", "b"):
            home = tmp_path / tag
            home.mkdir()
            # clean_env copies the session keyring into each home: the same broker key
            env = broker_env(clean_env(home))
            env["PLANTD_BROKER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)  # as the daemons
            started.append(start_broker(env, home, tag=f"broker-{tag}"))
        a, b = started
        home = tmp_path / "daemons"
        home.mkdir()
        env = clean_env(home)
        both = f"{a.endpoint},{b.endpoint}"
        env["PLANTD_CLIENT_ENDPOINT"] = both
        for name in ("STATE", "ECHO"):
            env[f"PLANTD_{name}_ENDPOINT"] = both
            env[f"PLANTD_{name}_HEALTH_PORT"] = "0"
            env[f"PLANTD_{name}_LOG_BUS"] = f"{a.bus('log')[0]},{b.bus('log')[0]}"
        env["PLANTD_STATE_STATE_BUS"] = f"{a.bus('state')[0]},{b.bus('state')[0]}"
        env["PLANTD_STATE_WORKERS"] = "4"
        two = TwoBrokers(a, b, env, home, [])
        two.start("state")
        two.start("echo")
        yield two
    finally:
        for proc in two.daemons if two else []:
            kill_pid(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for broker in started:
            kill_pid(broker.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.proc.wait(timeout=5)


def test_kill_one_broker_under_writes(brokers: TwoBrokers) -> None:
    both = brokers.endpoints
    buses = f"{brokers.a.bus('state')[1]},{brokers.b.bus('state')[1]}"
    acked: dict[str, int] = {}  # key -> revision of its acknowledged write
    ack_times: list[float] = []
    bus_revisions: list[int] = []
    killed_at = 0.0

    async def writer(state: StateClient, n: int, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            key = f"w{n}-{i}"
            written = await state.set("load", key, {"n": n, "i": i})
            acked[key] = written.revision
            ack_times.append(time.monotonic())
            i += 1

    async def listen(sub: Subscriber, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                _topic, doc = await sub.recv(timeout=0.2)
                if doc.get("op") == "set":
                    bus_revisions.append(doc["revision"])

    async def scenario() -> None:
        nonlocal killed_at
        sub = Subscriber(buses, topics=["load"])
        stop, heard = asyncio.Event(), asyncio.Event()
        async with Client(both, timeout=5.0) as client:
            state = StateClient(client)
            listener = asyncio.create_task(listen(sub, heard))
            await asyncio.sleep(0.3)
            tasks = [asyncio.create_task(writer(state, n, stop)) for n in range(4)]
            await asyncio.sleep(1.0)
            assert client.endpoint == brokers.a.endpoint  # sticky: the first one answers
            killed_at = time.monotonic()
            brokers.a.proc.kill()  # kill -9 under load
            brokers.a.proc.wait(timeout=10)
            await asyncio.sleep(2.0)
            assert await client.call("org.plantd.module.Echo", "echo", {"x": 1})
            stop.set()
            await asyncio.gather(*tasks)  # no write failed: each was acknowledged
            assert client.endpoint == brokers.b.endpoint
            await asyncio.sleep(0.5)  # the last writes' events are on their way
            heard.set()
            await listener
        sub.close()
        assert sub.dedup.duplicates > 0  # both buses delivered copies until the kill

    asyncio.run(scenario())
    # clients continued through the other broker within 2 heartbeat intervals
    after = [t for t in ack_times if t > killed_at]
    assert after, "no write acknowledged after the kill"
    assert after[0] - killed_at < 2 * HEARTBEAT, after[0] - killed_at
    gaps = [b - a for a, b in itertools.pairwise(ack_times) if b > killed_at]
    print(f"kill -> first write {after[0] - killed_at:.3f} s, longest pause {max(gaps):.3f} s")
    # every acknowledged write is there, applied once (version 1: its key was never
    # written again), at the revision it was acknowledged with
    with SyncClient(brokers.b.endpoint, timeout=5.0) as c:
        from plantd.client.state import SyncStateClient

        stored = {kv.key: kv for kv in SyncStateClient(c).list_keys("load")}
    assert set(acked) <= set(stored)
    assert all(stored[k].version == 1 and stored[k].mod_revision == r for k, r in acked.items())
    # the subscriber of both buses got each write once (the dedup by revision)
    assert len(bus_revisions) == len(set(bus_revisions))
    assert set(acked.values()) <= set(bus_revisions)
    # the daemons say one broker of two is gone (warn), once they noticed (liveness)
    for name in ("state", "echo"):

        def degraded(name: str = name) -> dict[str, Any] | None:
            doc = brokers.health(name)
            return doc if doc["status"] == "warn" else None

        doc = wait_until(degraded, 4 * HEARTBEAT, what=f"{name} health warn")
        check = doc["checks"][f"{name}:worker"][0]
        assert check["observedValue"] == 1 and brokers.a.endpoint in check["output"]
