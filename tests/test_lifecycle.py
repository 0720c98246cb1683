"""The shared daemon lifecycle with real processes: start/stop/status, pid files, signals,
the application/health+json endpoint and Prometheus metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, broker_env, stack_env
from tests.support.bus import wait_subscribed
from tests.support.polling import wait_until
from tests.support.processes import (
    PLANT,
    PlantRunner,
    http_get,
    pid_alive,
    read_pid_file,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(90)


def status_of(plant: PlantRunner, name: str, env: dict[str, str]) -> dict:
    out = plant("daemon", "status", name, "-o", "json", env=env)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    return row


def test_start_status_stop_detached(plant: PlantRunner, plantd_home: Path) -> None:
    env = broker_env(plant.env)
    started = plant("daemon", "start", "broker", env=env)
    assert started.returncode == 0, started.stderr
    assert "broker started" in started.stderr

    row = status_of(plant, "broker", env)
    assert row["state"] == "running"
    assert row["health"] == "pass"
    assert row["endpoint"] == env["PLANTD_BROKER_ENDPOINT"]
    pid = row["pid"]
    assert pid_alive(pid)
    info = read_pid_file(plantd_home, "broker")
    assert info is not None and info["pid"] == pid and info["health_port"] > 0
    assert (plantd_home / "log" / "broker.log").read_text().count("broker ready") == 1

    stopped = plant("daemon", "stop", "broker", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "broker stopped" in stopped.stderr
    assert wait_until(lambda: not pid_alive(pid), 5)
    assert not (plantd_home / "run" / "broker.pid").exists()
    assert status_of(plant, "broker", env)["state"] == "stopped"
    log = (plantd_home / "log" / "broker.log").read_text()
    assert "SIGTERM received" in log and "stopped (exit 0)" in log

    again = plant("daemon", "stop", "broker", env=env)  # idempotent
    assert again.returncode == 0 and "not running" in again.stderr


def test_pid_file_is_the_pid_alone_and_kill_stops_the_daemon(
    plant: PlantRunner, plantd_home: Path
) -> None:
    env = broker_env(plant.env)
    assert plant("daemon", "start", "broker", env=env).returncode == 0
    pid_path = plantd_home / "run" / "broker.pid"
    state_path = plantd_home / "run" / "broker.json"
    pid = status_of(plant, "broker", env)["pid"]
    assert pid_path.read_text() == f"{pid}\n"
    facts = json.loads(state_path.read_text())
    assert facts["pid"] == pid and facts["health_port"] > 0 and facts["version"]
    # status takes health and endpoint from the state file
    row = status_of(plant, "broker", env)
    assert row["health"] == "pass" and row["endpoint"] == env["PLANTD_BROKER_ENDPOINT"]
    assert row["health_url"] == f"http://127.0.0.1:{facts['health_port']}/healthz"

    killed = subprocess.run(["sh", "-c", f"kill -TERM $(cat {pid_path})"], timeout=10)
    assert killed.returncode == 0
    assert wait_until(lambda: not pid_alive(pid), 10)
    assert wait_until(lambda: not pid_path.exists() and not state_path.exists(), 5)
    assert "broker stopped (exit 0)" in (plantd_home / "log" / "broker.log").read_text()


def test_legacy_json_pid_file_of_a_running_daemon_is_understood(
    plant: PlantRunner, plantd_home: Path
) -> None:
    """An older plantd wrote the facts into the pid file: status and stop still find it."""
    env = broker_env(plant.env)
    assert plant("daemon", "start", "broker", env=env).returncode == 0
    run_dir = plantd_home / "run"
    facts = json.loads((run_dir / "broker.json").read_text())
    (run_dir / "broker.json").unlink()
    (run_dir / "broker.pid").write_text(json.dumps(facts))

    row = status_of(plant, "broker", env)
    assert row["state"] == "running" and row["pid"] == facts["pid"]
    assert row["health"] == "pass" and row["endpoint"] == env["PLANTD_BROKER_ENDPOINT"]
    stopped = plant("daemon", "stop", "broker", env=env)
    assert stopped.returncode == 0 and "broker stopped" in stopped.stderr
    assert wait_until(lambda: not pid_alive(facts["pid"]), 10)
    assert not (run_dir / "broker.pid").exists()


def test_double_start_is_a_conflict(plant: PlantRunner, broker: BrokerProcess) -> None:
    out = plant("daemon", "start", "broker", env=broker.env)
    assert out.returncode == 6
    assert f"already running (pid {broker.pid})" in out.stderr
    # the foreground entry point refuses too, before touching any socket
    fg = plant("daemon", "run", "broker", env=broker.env, timeout=30)
    assert fg.returncode == 6
    assert "already running" in fg.stderr
    assert broker.proc.poll() is None


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        (("daemon", "start", "broker"), "PLANTD_BROKER_ENDPOINT"),
        (("up",), "PLANTD_BROKER_ENDPOINT"),
        (("daemon", "start", "broker"), "PLANTD_BROKER_HEALTH_PORT"),
    ],
)
def test_a_port_in_use_is_a_conflict_naming_the_port_and_its_holder(
    plant: PlantRunner, plantd_home: Path, command: tuple[str, ...], setting: str
) -> None:
    env = stack_env(plant.env)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env[setting] = f"tcp://127.0.0.1:{port}" if setting.endswith("ENDPOINT") else str(port)
        out = plant(*command, env=env)
    assert out.returncode == 6, out.stderr
    first = out.stderr.splitlines()[0]
    assert f"broker cannot start: port {port}" in first
    assert f"is in use by pid {os.getpid()}" in first
    assert not (plantd_home / "run" / "broker.pid").exists()


def test_stale_pid_file_of_dead_process(plant: PlantRunner, plantd_home: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    run_dir = plantd_home / "run"
    run_dir.mkdir()
    (run_dir / "broker.pid").write_text(json.dumps({"name": "broker", "pid": dead.pid}))
    env = broker_env(plant.env)

    assert status_of(plant, "broker", env)["state"] == "stopped"
    assert not (run_dir / "broker.pid").exists()  # stale file removed

    (run_dir / "broker.pid").write_text("not json at all")
    started = plant("daemon", "start", "broker", env=env)
    assert started.returncode == 0, started.stderr
    assert read_pid_file(plantd_home, "broker")["pid"] != dead.pid
    assert plant("daemon", "stop", "broker", env=env).returncode == 0


def test_pid_file_naming_a_foreign_process_is_stale_and_never_killed(
    plant: PlantRunner, plantd_home: Path
) -> None:
    foreign = subprocess.Popen(["sleep", "30"])
    try:
        run_dir = plantd_home / "run"
        run_dir.mkdir()
        (run_dir / "broker.pid").write_text(
            json.dumps({"name": "broker", "pid": foreign.pid, "started": time.time()})
        )
        out = plant("daemon", "stop", "broker", env=broker_env(plant.env))
        assert out.returncode == 0
        assert "not running" in out.stderr
        assert foreign.poll() is None  # an unrelated process survives
        assert not (run_dir / "broker.pid").exists()
    finally:
        foreign.kill()
        foreign.wait(timeout=5)


def test_sigterm_is_graceful(broker: BrokerProcess) -> None:
    pid_file = broker.home / "run" / "broker.pid"
    assert pid_file.exists()
    os.kill(broker.pid, signal.SIGTERM)
    assert broker.proc.wait(timeout=10) == 0
    assert not pid_file.exists()
    out = broker.log_text()
    assert "SIGTERM received: stopping" in out
    assert "broker stopped (exit 0)" in out


def test_sigint_is_graceful(broker: BrokerProcess) -> None:
    os.kill(broker.pid, signal.SIGINT)
    assert broker.proc.wait(timeout=10) == 0
    assert "SIGINT received: stopping" in broker.log_text()


def test_healthz_is_health_json(broker: BrokerProcess) -> None:
    status, headers, body = http_get(f"{broker.health_url}/healthz")
    assert status == 200
    assert headers["Content-Type"].startswith("application/health+json")
    doc = json.loads(body)
    assert doc["status"] == "pass"
    assert doc["serviceId"] == "plantd-broker"
    assert doc["version"]
    checks = doc["checks"]
    for name in ("lifecycle:uptime", "broker:router", "broker:workers", "broker:buses"):
        assert checks[name][0]["status"] == "pass", name
    assert checks["broker:router"][0]["observedValue"] == broker.endpoint
    assert checks["broker:buses"][0]["observedValue"] == 4


def test_metrics_expose_broker_counters(broker: BrokerProcess) -> None:
    from plantd.client import SyncClient

    with SyncClient(broker.endpoint, timeout=5) as c:
        services = c.mmi("mmi.services")
    assert "services" in services or isinstance(services, list)

    status, headers, body = http_get(f"{broker.health_url}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["plantd_broker_requests_total"] >= 1
    assert samples["plantd_broker_mmi_total"] >= 1
    assert "plantd_broker_workers" in samples
    assert "process_resident_memory_bytes" in samples
    assert any(k.startswith("plantd_daemon_start_time_seconds") for k in samples)


def test_start_failure_reports_log_tail(plant: PlantRunner, plantd_home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = broker_env(plant.env)
        env["PLANTD_BROKER_ENDPOINT"] = f"tcp://127.0.0.1:{port}"
        t0 = time.monotonic()
        out = plant("daemon", "start", "broker", "--wait", "15", env=env)
        assert time.monotonic() - t0 < 15
    # issue 17: a port in use is a conflict (exit 6, was 1) naming the port
    assert out.returncode == 6
    first, *rest = out.stderr.splitlines()
    assert first.startswith(f"plant: error: broker cannot start: port {port}")
    assert any(line.startswith("  | ") and f"port {port}" in line for line in rest)
    assert "Traceback" not in first
    assert not (plantd_home / "run" / "broker.pid").exists()


def test_bad_setting_exits_2_naming_the_variable(plant: PlantRunner) -> None:
    env = broker_env(plant.env)
    env["PLANTD_BROKER_HEARTBEAT_INTERVAL"] = "soon"
    out = plant("daemon", "run", "broker", env=env, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "plantd: PLANTD_BROKER_HEARTBEAT_INTERVAL='soon': expected float"
    ]


def test_health_port_in_use_is_a_conflict(plant: PlantRunner) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = broker_env(plant.env, health_port=taken.getsockname()[1])
        out = plant("daemon", "run", "broker", env=env, timeout=30)
    assert out.returncode == 6
    assert "cannot bind health endpoint" in out.stderr


async def test_health_endpoint_fails_with_503_and_survives_broken_checks() -> None:
    """The HTTP layer on its own: worst status wins, a raising check counts as fail."""
    import aiohttp
    from prometheus_client import CollectorRegistry

    from plantd.daemons.health import HealthRegistry, HealthServer

    checks = HealthRegistry()
    checks.add_check("ok", lambda: ("pass", {"observedValue": 1}))
    server = HealthServer("plantd-test", checks, CollectorRegistry(), "127.0.0.1", 0)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/healthz"
            async with session.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json(content_type=None))["status"] == "pass"

            async def degraded() -> tuple[str, dict]:
                return "warn", {"output": "slow"}

            checks.add_check("slow", degraded)
            async with session.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json(content_type=None))["status"] == "warn"

            def broken() -> tuple[str, dict]:
                raise RuntimeError("disk on fire")

            checks.add_check("broken", broken)
            async with session.get(url) as resp:
                assert resp.status == 503
                assert resp.headers["Content-Type"] == "application/health+json"
                doc = await resp.json(content_type=None)
            assert doc["status"] == "fail"
            assert doc["checks"]["broken"][0]["output"] == "RuntimeError: disk on fire"
            assert doc["checks"]["ok"][0]["status"] == "pass"
    finally:
        await server.stop()


def test_registry_lists_installed_daemons_in_start_order() -> None:
    from plantd import daemons

    available = daemons.available()
    assert available[0] == "broker" and "echo" in available
    assert available == [n for n in daemons.REGISTRY if n in available]  # dependency order
    assert daemons.resolve(["echo", "broker"]) == ["broker", "echo"]
    assert daemons.resolve([]) == daemons.resolve(["all"]) == available
    assert not daemons._module_exists("plantd.daemons.no_such_daemon")
    with pytest.raises(daemons.UnknownDaemon, match="unknown daemon 'nope'"):
        daemons.resolve(["nope"])
    assert daemons.load("echo").name == "echo"


def test_daemon_logs_reach_the_log_bus(broker: BrokerProcess) -> None:
    """The lifecycle publishes every daemon's log records on the log bus."""
    frontend, backend = broker.bus("log")
    env = dict(
        broker.env,
        PLANTD_ECHO_ENDPOINT=broker.endpoint,
        PLANTD_ECHO_HEALTH_PORT="0",
        PLANTD_ECHO_HEARTBEAT_INTERVAL="0.25",  # match the fixture broker's
        PLANTD_ECHO_LOG_BUS=frontend,
    )
    tail = subprocess.Popen(
        [*PLANT, "bus", "tail", "log", "-e", backend, "-p", "org.plantd.module.Echo", "-t", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_subscribed(frontend, "org.plantd.module.Echo")  # before Echo publishes a record
    echo = subprocess.Popen(
        [*PLANT, "daemon", "run", "echo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        # ready (healthz pass) comes after the log bus publisher is installed
        ready = wait_healthy(echo, broker.home, "echo", broker.home / "echo.out", 15)
        assert ready, "echo daemon did not start"
        # ... which still has to learn the tail's subscription from the proxy (slow joiner on
        # the publishing side; nothing outside the echo process can see when it has)
        time.sleep(1.0)
        os.kill(echo.pid, signal.SIGTERM)  # logs "SIGTERM received" and "echo stopped"
        assert echo.wait(timeout=15) == 0
        out, err = tail.communicate(timeout=20)
    finally:
        for proc in (echo, tail):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert tail.returncode == 7, err  # it ran until 3 s without messages
    records = [json.loads(line) for line in out.splitlines()]
    assert records
    for rec in records:
        assert rec["topic"] == f"org.plantd.module.Echo.{rec['data']['level']}", rec
        assert rec["data"]["service"] == "org.plantd.module.Echo"
        assert rec["data"]["pid"] == echo.pid
    assert any("SIGTERM received" in rec["data"]["msg"] for rec in records)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    from plantd.daemons import process

    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    try:
        time.sleep(0.2)  # let the shell install its trap
        t0 = time.monotonic()
        assert process._terminate(stubborn.pid, 0.5) is False  # not graceful
        assert time.monotonic() - t0 < 5
        assert not pid_alive(stubborn.pid)  # SIGKILLed (and reaped by _terminate)
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait(timeout=5)


def test_restart_gives_a_new_process(plant: PlantRunner, plantd_home: Path) -> None:
    env = broker_env(plant.env)
    assert plant("daemon", "start", "broker", env=env).returncode == 0
    first = read_pid_file(plantd_home, "broker")["pid"]
    out = plant("daemon", "restart", "broker", env=env)
    assert out.returncode == 0, out.stderr
    second = read_pid_file(plantd_home, "broker")["pid"]
    assert second != first and not pid_alive(first) and pid_alive(second)
    assert status_of(plant, "broker", env)["health"] == "pass"
    assert plant("daemon", "stop", "all", env=env).returncode == 0
    assert wait_until(lambda: not pid_alive(second), 5)
