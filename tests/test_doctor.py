"""``plant doctor`` against real processes: a healthy broker, then a broken installation
(a port held by another process, a stale pid file, no broker) named with its fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plantd.cli.doctor import clock_skew, wal_reset_affected
from tests.support.broker import stack_env
from tests.support.polling import wait_until
from tests.support.processes import PlantRunner, kill_daemons_in

pytestmark = pytest.mark.timeout(90)


def doctor(plant: PlantRunner, env: dict[str, str]) -> tuple[int, dict[str, dict]]:
    out = plant("doctor", "-o", "json", env=env)
    return out.returncode, {row["check"]: row for row in json.loads(out.stdout)}


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ((3, 40, 1), True),
        ((3, 44, 5), True),
        ((3, 44, 6), False),
        ((3, 45, 0), True),
        ((3, 50, 6), True),
        ((3, 50, 7), False),
        ((3, 51, 2), True),
        ((3, 51, 3), False),
        ((3, 52, 0), False),
    ],
)
def test_wal_reset_rule(version: tuple[int, int, int], affected: bool) -> None:
    assert wal_reset_affected(version) is affected


def test_doctor_on_a_healthy_stack_passes(plant: PlantRunner, plantd_home: Path) -> None:
    env = stack_env(plant.env)
    env["PLANTD_CLIENT_ENDPOINT"] = env["PLANTD_BROKER_ENDPOINT"]
    try:
        assert plant("daemon", "start", "broker", env=env).returncode == 0
        rc, rows = doctor(plant, env)
        assert rc == 0, rows
        assert rows["python"]["status"] == "ok" and rows["sqlite"]["detail"].startswith("SQLite")
        assert "CURVE" in rows["zmq"]["detail"]
        assert rows["daemon broker"]["status"] == "ok"
        assert rows["broker"]["status"] == "ok"
        assert all(row["status"] != "fail" for row in rows.values())
    finally:
        kill_daemons_in(plantd_home)


def test_doctor_names_a_taken_port_a_stale_pid_file_and_a_missing_broker(
    plant: PlantRunner, plantd_home: Path
) -> None:
    env = stack_env(plant.env)
    env["PLANTD_CLIENT_ENDPOINT"] = env["PLANTD_BROKER_ENDPOINT"]
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    (plantd_home / "run").mkdir(parents=True)
    (plantd_home / "run" / "state.pid").write_text(f"{dead.pid}\n")
    port = int(env["PLANTD_BROKER_ENDPOINT"].rsplit(":", 1)[1])
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        rc, rows = doctor(plant, env)
    assert rc == 6  # the first failing check: a port in use
    taken = rows[f"port {port}"]
    assert taken["status"] == "fail" and f"by pid {os.getpid()}" in taken["detail"]
    stale = rows["pid file state"]
    assert stale["status"] == "warn" and "stale" in stale["detail"] and stale["fix"]
    assert rows["broker"]["status"] == "fail" and "unreachable" in rows["broker"]["detail"]
    assert (plantd_home / "run" / "state.pid").exists()  # doctor changes nothing


def test_clock_skew_is_measured_against_the_middle_of_the_round_trip() -> None:
    skew, error = clock_skew(100.0, 103.5, 101.0)
    assert (skew, error) == (3.0, 0.5)


def test_doctor_fails_on_a_readable_secret_and_a_service_that_does_not_answer(
    plant: PlantRunner, plantd_home: Path
) -> None:
    """Issue 17: key-file permissions, the broker's clock and every service answering."""
    env = stack_env(plant.env)
    env["PLANTD_CLIENT_ENDPOINT"] = env["PLANTD_BROKER_ENDPOINT"]
    secrets = plantd_home / "identity" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    leaked = secrets / "alice.key_secret"
    leaked.write_text("secret\n")
    leaked.chmod(0o644)
    (plantd_home / "identity").chmod(0o700)
    script = (
        "import asyncio, sys\n"
        "from plantd.client import Worker\n"
        "w = Worker(sys.argv[1], 'org.plantd.test.Stuck', heartbeat_interval=0.25)\n"
        "@w.operation('health')\n"
        "async def health(doc):\n"
        "    await asyncio.sleep(60)\n"
        "    return {}\n"
        "asyncio.run(w.run())\n"
    )
    worker = None
    try:
        assert plant("daemon", "start", "broker", env=env).returncode == 0
        worker = subprocess.Popen(
            [sys.executable, "-c", script, env["PLANTD_BROKER_ENDPOINT"]], env=env
        )
        assert wait_until(
            lambda: "Stuck" in plant("-o", "json", "services", env=env).stdout, 15, 0.2
        ), "stuck worker never registered"
        rc, rows = doctor(plant, env)
        keys = rows["key alice.key_secret"]
        assert keys["status"] == "fail" and str(leaked) in keys["detail"], keys
        assert keys["fix"] == f"chmod 600 {leaked}"
        stuck = rows["service org.plantd.test.Stuck"]
        assert stuck["status"] == "fail" and "does not answer" in stuck["detail"], stuck
        assert rows["clock"]["status"] == "ok" and "broker clock" in rows["clock"]["detail"]
        assert rc == 9  # the first failing check: the readable secret (KEY_INSECURE)
        leaked.chmod(0o600)
        rc, rows = doctor(plant, env)
        assert "key alice.key_secret" not in rows and rc == 7  # now the service that never answers
    finally:
        if worker is not None:
            worker.kill()
            worker.wait(timeout=5)
        kill_daemons_in(plantd_home)
