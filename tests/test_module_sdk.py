"""The module SDK: decorated operations, bus subscriptions and periodic tasks on a real
broker and bus; and a scaffolded, pip-installed module joining and leaving a running system."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantd.broker.bus import BusProxy
from plantd.broker.core import BrokerSettings
from plantd.broker.server import BrokerServer
from plantd.client import Client
from plantd.config import Home
from plantd.daemons.health import HealthRegistry
from plantd.daemons.lifecycle import DaemonContext
from plantd.module import Module, ModuleSettings, every, operation, subscribe
from tests.support.broker import broker_env, stack_env, start_broker
from tests.support.polling import wait_until
from tests.support.ports import free_port, tcp
from tests.support.processes import (
    PlantRunner,
    kill_daemons_in,
    pid_alive,
    read_pid_file,
)


class Probe(Module):
    name = "probe"
    service = "org.plantd.module.Probe"

    def __init__(self, settings: ModuleSettings) -> None:
        super().__init__(settings)
        self.seen: list[dict[str, Any]] = []
        self.ticks = 0

    @operation("seen")
    async def report(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {"success": True, "data": {"seen": len(self.seen), "ticks": self.ticks}}

    @subscribe("event", "org.plantd.Probe.")
    async def on_event(self, topic: str, doc: dict[str, Any]) -> None:
        self.seen.append(doc)

    @every(0.05)
    async def tick(self) -> None:
        self.ticks += 1
        self.publish("event", "org.plantd.Probe.tick", {"n": self.ticks})


@pytest.mark.timeout(30)
async def test_module_operations_subscriptions_and_periodic_tasks(tmp_path: Path) -> None:
    stop_broker = asyncio.Event()
    server = BrokerServer(BrokerSettings(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.2))
    endpoint = server.bind()
    broker = asyncio.create_task(server.run(stop_broker))
    front, back = tcp(free_port()), tcp(free_port())
    bus = BusProxy("event", front, back)
    bus.start()
    settings = ModuleSettings(
        endpoint=endpoint, heartbeat_interval=0.2, event_bus=front, event_bus_sub=back
    )
    module = Probe(settings)
    ctx = DaemonContext(
        name="probe",
        settings=settings,
        home=Home(tmp_path),
        log=logging.getLogger("probe"),
        stop=asyncio.Event(),
        health=HealthRegistry(),
        metrics=None,
        pid_file=tmp_path / "probe.pid",
    )
    running = asyncio.create_task(module.run(ctx))
    try:
        async with Client(endpoint, timeout=5.0) as client:
            data: dict[str, Any] = {}
            for _ in range(100):  # bounded: PUB/SUB joins asynchronously
                data = (await client.call("org.plantd.module.Probe", "seen"))["data"]
                if data["seen"] >= 3:
                    break
                await asyncio.sleep(0.05)
            assert data["seen"] >= 3 and data["ticks"] >= data["seen"]
            health = await client.call("org.plantd.module.Probe", "health")
            assert health["status"] == "pass" and health["operations"] == ["health", "seen"]
        assert ctx.ready
        ctx.stop.set()
        await asyncio.wait_for(running, 5)
    finally:
        ctx.stop.set()
        bus.stop()
        stop_broker.set()
        await asyncio.wait_for(broker, 5)


@pytest.mark.timeout(180)
@contextlib.contextmanager
def default_ports_taken() -> Iterator[None]:
    """Hold plantd's default MDP and bus ports on 127.0.0.1 (a port already taken is taken)."""
    socks = []
    for port in (9797, 11000, 11001, 12000, 12001, 13000, 13001, 14000, 14001):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    try:
        yield
    finally:
        for sock in socks:
            sock.close()


def test_scaffolded_module_joins_and_leaves_a_running_system(
    plant: PlantRunner, plantd_home: Path, plantd_env: dict[str, str], tmp_path: Path
) -> None:
    env = stack_env(plantd_env)
    endpoint = env["PLANTD_BROKER_ENDPOINT"]
    env.update(
        PLANTD_DEMO_ENDPOINT=endpoint,
        PLANTD_DEMO_HEARTBEAT_INTERVAL="0.25",
        PLANTD_DEMO_LOG_BUS=env["PLANTD_BROKER_LOG_FRONTEND"],
    )
    new = plant("module", "new", "demo", "--dir", str(tmp_path), env=env)
    assert new.returncode == 0, new.stderr
    package = Path(new.stdout.strip())
    assert (package / "plantd_demo" / "module.py").is_file()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(package)],
        check=True,
        timeout=120,
    )
    try:
        broker = start_broker(env, plantd_home)
        assert plant("daemon", "start", "echo", env=env).returncode == 0
        listed = plant("module", "list", "-o", "json", env=env)
        assert {m["name"]: m["state"] for m in json.loads(listed.stdout)}["demo"] == "stopped"

        started = plant("module", "start", "demo", env=env)
        assert started.returncode == 0, started.stderr
        call = plant("call", "org.plantd.module.Demo", "greet", '{"name":"plant"}', env=env)
        assert call.returncode == 0, call.stderr
        assert json.loads(call.stdout)["data"]["message"] == "hello plant"

        stopped = plant("module", "stop", "demo", env=env)
        assert stopped.returncode == 0, stopped.stderr
        # the rest kept running throughout: same broker process, echo still answers
        assert broker.proc.poll() is None
        echo = plant("call", "org.plantd.module.Echo", "echo", '{"still":1}', env=env)
        assert echo.returncode == 0 and json.loads(echo.stdout) == {"still": 1}
        gone = plant("call", "org.plantd.module.Demo", "greet", "{}", env=env)
        assert gone.returncode == 8  # no worker any more: 503 from the broker
        assert plant("module", "stop", "nosuch", env=env).returncode == 4

        # the scaffold's own test passes as generated, also where a plantd stack already
        # runs (module authors develop next to one): the default ports are taken
        with default_ports_taken():
            own = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    str(package / "tests"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=package,
            )
        assert own.returncode == 0, own.stdout + own.stderr
    finally:
        subprocess.run([*pip, "uninstall", "-y", "plantd-demo"], timeout=120, check=False)


MODULE_SOURCE = """
from plantd.module import Module, ModuleSettings, operation


class DowntestModule(Module[ModuleSettings]):
    name = "downtest"
    service = "org.plantd.module.Downtest"
    settings_class = ModuleSettings

    @operation("ping")
    async def ping(self, doc):
        return {"success": True, "data": {}}
"""


def test_down_stops_modules_first_then_the_daemons(
    plant: PlantRunner, plantd_home: Path, plantd_env: dict[str, str], tmp_path: Path
) -> None:
    """A module started with `plant module start` does not outlive `plant down` (issue 17)."""
    site = tmp_path / "site"  # an installed module without touching the shared venv
    dist = site / "plantd_downtest-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plantd-downtest\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[plantd.modules]\ndowntest = downtest_mod:DowntestModule\n"
    )
    (site / "downtest_mod.py").write_text(MODULE_SOURCE)
    env = broker_env(plantd_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    env.update(
        PLANTD_DOWNTEST_ENDPOINT=env["PLANTD_BROKER_ENDPOINT"],
        PLANTD_DOWNTEST_HEALTH_PORT="0",
        PLANTD_DOWNTEST_LOG_BUS="off",
    )
    try:
        assert plant("daemon", "start", "broker", env=env).returncode == 0
        started = plant("module", "start", "downtest", env=env)
        assert started.returncode == 0, started.stderr
        pids = {n: read_pid_file(plantd_home, n)["pid"] for n in ("broker", "downtest")}

        down = plant("down", env=env)
        assert down.returncode == 0, down.stderr
        lines = down.stderr.splitlines()
        assert lines.index("plant: downtest stopped") < lines.index("plant: broker stopped")
        assert all(wait_until(lambda p=p: not pid_alive(p), 10) for p in pids.values())
        assert not list((plantd_home / "run").glob("*.pid"))
    finally:
        kill_daemons_in(plantd_home)
