"""``plant`` as users and scripts run it: a subprocess per command, one exit code per outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, stack_env
from tests.support.bus import publish_until_seen
from tests.support.polling import wait_until
from tests.support.ports import free_port, tcp
from tests.support.processes import PLANT, PlantRunner, kill_daemons_in, pid_alive

pytestmark = pytest.mark.timeout(120)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("plant: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bogus"], "No such option"),
        (["call"], "Missing argument"),
        (["call", "org.plantd.module.Echo", "echo", "{not json"], "invalid JSON payload"),
        (["services", "-o", "yaml"], "yaml"),
        (["daemon", "start", "nosuchdaemon"], "unknown daemon 'nosuchdaemon'"),
        (["bus", "tail", "nosuchbus", "--count", "1"], "unknown bus 'nosuchbus'"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_bad_arguments_exit_2(plant: PlantRunner, args: list[str], fragment: str) -> None:
    out = plant(*args, timeout=30)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    assert_one_line_error(out.stderr, fragment)


def test_no_arguments_prints_help_and_exits_2(plant: PlantRunner) -> None:
    out = plant(timeout=30)
    assert out.returncode == 2
    assert "Usage" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_version(plant: PlantRunner) -> None:
    out = plant("--version", timeout=30)
    assert out.returncode == 0
    assert out.stdout.startswith("plant 0.")


@pytest.mark.parametrize("args", [["services"], ["workers"], ["call", "org.x.Y", "op", "{}"]])
def test_no_broker_exits_3_quickly(plant: PlantRunner, args: list[str]) -> None:
    endpoint = tcp(free_port())  # nothing listens here
    t0 = time.monotonic()
    out = plant("-e", endpoint, "-t", "3", *args, timeout=30)
    elapsed = time.monotonic() - t0
    assert out.returncode == 3, out.stderr
    assert elapsed < 3 + 5  # the request timeout plus interpreter start-up, at most
    assert_one_line_error(out.stderr, "unreachable", endpoint)
    assert out.stdout == ""


def test_client_endpoint_from_env(plant: PlantRunner) -> None:
    env = dict(plant.env, PLANTD_CLIENT_ENDPOINT=tcp(free_port()), PLANTD_CLIENT_TIMEOUT="2")
    out = plant("services", env=env, timeout=30)
    assert out.returncode == 3
    assert env["PLANTD_CLIENT_ENDPOINT"] in out.stderr


def test_bad_client_env_exits_2(plant: PlantRunner) -> None:
    env = dict(plant.env, PLANTD_CLIENT_TIMEOUT="forever")
    out = plant("services", env=env, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out.stderr, "PLANTD_CLIENT_TIMEOUT='forever'")


def test_unknown_service_exits_8(plant: PlantRunner, broker: BrokerProcess) -> None:
    out = plant("call", "org.plantd.NoSuchService", "get", "{}", env=broker.env, timeout=30)
    assert out.returncode == 8, out.stderr
    assert_one_line_error(out.stderr, "org.plantd.NoSuchService")


def test_services_and_workers_on_empty_broker(plant: PlantRunner, broker: BrokerProcess) -> None:
    out = plant("services", "-o", "json", env=broker.env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"services": []}
    out = plant("-o", "json", "workers", env=broker.env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"workers": []}


def test_bus_tail_prints_published_messages(broker: BrokerProcess) -> None:
    from plantd.client.bus import Publisher

    frontend, _backend = broker.bus("log")
    tail = subprocess.Popen(
        [
            *PLANT,
            "bus",
            "tail",
            "log",
            "--topic",
            "org.plantd.Test",
            "--count",
            "2",
            "--timeout",
            "20",
            "-o",
            "json",
        ],
        env=broker.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pub = Publisher(frontend)
    try:
        # a subscription takes a moment to propagate through the proxy: publish until seen
        def publish(n: int) -> None:
            pub.publish_nowait("other.topic", {"skip": True})
            pub.publish_nowait("org.plantd.Test", {"seq": n - 1})

        publish_until_seen(
            publish, lambda: tail.poll() is not None, "bus tail exits", timeout=20, max_probes=400
        )
        out, err = tail.communicate(timeout=10)
    finally:
        pub.close()
        if tail.poll() is None:
            tail.kill()
            tail.wait(timeout=5)
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["topic"] == "org.plantd.Test"
        assert "seq" in line["data"]


def test_bus_tail_timeout_exits_7(plant: PlantRunner, broker: BrokerProcess) -> None:
    out = plant("bus", "tail", "event", "--timeout", "0.5", env=broker.env, timeout=30)
    assert out.returncode == 7
    assert_one_line_error(out.stderr, "no message")


@pytest.fixture
def stack(plant: PlantRunner, plantd_home: Path) -> Iterator[dict[str, str]]:
    """Environment for a whole ``plant up`` stack on random ports; torn down by PID."""
    env = stack_env(plant.env)
    try:
        yield env
    finally:
        plant("down", env=env, timeout=60)
        kill_daemons_in(plantd_home)


def test_up_call_down(plant: PlantRunner, stack: dict[str, str], plantd_home: Path) -> None:
    up = plant("up", "-o", "json", env=stack, timeout=90)
    assert up.returncode == 0, up.stderr
    rows = {row["name"]: row for row in json.loads(up.stdout)}
    assert rows["broker"]["state"] == rows["echo"]["state"] == "running"
    assert rows["proxy"]["state"] == "running"  # plant up includes the HTTP proxy
    pids = [row["pid"] for row in rows.values()]

    again = plant("up", env=stack, timeout=90)  # idempotent: already running is fine
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr

    call = plant("call", "org.plantd.module.Echo", "echo", '{"a":1}', env=stack)
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout) == {"a": 1}

    raw = plant("call", "org.plantd.module.Echo", "echo", '{"a":1}', "-o", "raw", env=stack)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.splitlines() == ["echo", '{"a":1}']  # body frames, unchanged

    piped = plant("call", "org.plantd.module.Echo", "health", "-", input='{"x": 2}', env=stack)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["status"] == "pass"

    rejected = plant("call", "org.plantd.module.Echo", "nosuchop", env=stack)
    assert rejected.returncode == 1
    assert_one_line_error(rejected.stderr, "unknown operation 'nosuchop'")

    services = plant("services", "-o", "json", env=stack)
    assert services.returncode == 0, services.stderr
    names = [s["name"] for s in json.loads(services.stdout)["services"]]
    assert "org.plantd.module.Echo" in names

    workers = plant("workers", "-o", "table", env=stack)
    assert workers.returncode == 0, workers.stderr
    header, *body = workers.stdout.splitlines()
    assert "SERVICE" in header
    assert any("org.plantd.module.Echo" in line for line in body)

    status = plant("daemon", "status", "-o", "json", env=stack)
    assert status.returncode == 0
    assert {r["name"]: r["health"] for r in json.loads(status.stdout)}["echo"] == "pass"

    down = plant("down", env=stack, timeout=60)
    assert down.returncode == 0, down.stderr
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
    assert not list((plantd_home / "run").glob("*.pid"))
    after = plant("daemon", "status", "all", "-o", "json", env=stack)
    assert {r["state"] for r in json.loads(after.stdout)} == {"stopped"}
    gone = plant("call", "org.plantd.module.Echo", "echo", "{}", "-t", "2", env=stack)
    assert gone.returncode == 3


def test_request_timeout_exits_7(plant: PlantRunner, broker: BrokerProcess) -> None:
    """A registered worker that never answers in time: the broker is up, so TIMEOUT."""
    script = (
        "import asyncio, sys\n"
        "from plantd.client import Worker\n"
        "w = Worker(sys.argv[1], 'org.plantd.test.Slow', heartbeat_interval=0.25)\n"
        "@w.operation('wait')\n"
        "async def wait(doc):\n"
        "    await asyncio.sleep(30)\n"
        "    return {}\n"
        "asyncio.run(w.run())\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, broker.endpoint], env=broker.env)
    try:
        ok = wait_until(
            lambda: plant("-o", "json", "services", env=broker.env).stdout.count("Slow") > 0,
            15,
            0.2,
            what="slow worker registered",
        )
        assert ok, "slow worker never registered"
        out = plant("-t", "1", "call", "org.plantd.test.Slow", "wait", env=broker.env)
        assert out.returncode == 7, out.stderr
        assert_one_line_error(out.stderr, "no reply")
    finally:
        worker.kill()
        worker.wait(timeout=5)


def test_completion_script_completes_daemon_names_in_bash(
    plant: PlantRunner, plantd_env: dict[str, str], tmp_path: Path
) -> None:
    """`plant completion bash` prints a script that, sourced in a real bash, completes
    daemon names by asking `plant` itself (issue 17)."""
    out = plant("completion", "bash")
    assert out.returncode == 0, out.stderr
    assert "_PLANT_COMPLETE=complete_bash" in out.stdout
    assert out.stdout.rstrip().endswith("complete -o default -F _plant_completion plant")
    script = tmp_path / "plant.bash"
    script.write_text(out.stdout)
    bin_dir = tmp_path / "bin"  # `plant` on PATH, as the console script would be
    bin_dir.mkdir()
    (bin_dir / "plant").write_text(f'#!/bin/sh\nexec {" ".join(PLANT)} "$@"\n')
    (bin_dir / "plant").chmod(0o755)
    env = {**plantd_env, "PATH": f"{bin_dir}:{plantd_env.get('PATH', '')}"}
    probe = (
        f"source {script}; COMP_WORDS=(plant daemon start st); COMP_CWORD=3;"
        ' _plant_completion plant; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["state"]

    for shell, marker in (("zsh", "compdef _plant_completion plant"), ("fish", "complete")):
        res = plant("completion", shell, "-o", "json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["shell"] == shell and marker in doc["script"]
    assert plant("completion", "tcsh").returncode == 2
