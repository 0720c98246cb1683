"""Shared fixtures: free ports, an isolated PLANTD_HOME, and a real broker daemon process.

Every process a fixture starts is killed by PID at teardown and every wait is bounded, so a
hung daemon fails one test instead of the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUSES = ("state", "event", "metric", "log")
#: daemons `plant up` starts besides the broker (their PLANTD_<NAME>_* settings get test ports)
WORKER_DAEMONS = ("ECHO", "STATE", "LOGGER", "METRIC")
START_TIMEOUT = 20.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this test run has not
    handed out before (the kernel may offer a just-closed port again; a test that allocates
    nine ports at once must not get two equal ones)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def clean_env(home: Path) -> dict[str, str]:
    """The test process environment without any PLANTD_* setting, plus an isolated home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env["PLANTD_HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / "xdg-config")  # no user config file leaks in
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PLANTD_DEBUG", None)
    return env


def broker_env(env: dict[str, str], health_port: int | None = None) -> dict[str, str]:
    """Broker settings on random ports with short heartbeats and queue expiry.

    The health port is handed out like the others, never 0: the kernel's pick for port 0
    comes from the same range and once landed on a bus port handed out a moment before."""
    port = free_port()
    if health_port is None:
        health_port = free_port()
    env = dict(env)
    env.update(
        PLANTD_BROKER_ENDPOINT=tcp(port),
        PLANTD_BROKER_HEALTH_PORT=str(health_port),
        PLANTD_BROKER_HEARTBEAT_INTERVAL="0.25",
        PLANTD_BROKER_REQUEST_TIMEOUT="1.0",
        # a request that lands on a just-killed worker before it is expired is answered 504
        # after this (a worker never seen heartbeating while busy may be a foreign one stuck
        # in a long handler, so production waits 30 s)
        PLANTD_BROKER_BUSY_TIMEOUT="2.0",
        PLANTD_BROKER_LOG_LEVEL="debug",
        PLANTD_CLIENT_ENDPOINT=tcp(port),
        PLANTD_CLIENT_TIMEOUT="5",
    )
    for bus in BUSES:
        env[f"PLANTD_BROKER_{bus.upper()}_FRONTEND"] = tcp(free_port())
        env[f"PLANTD_BROKER_{bus.upper()}_BACKEND"] = tcp(free_port())
    return env


def stack_env(env: dict[str, str]) -> dict[str, str]:
    """Settings for the whole ``plant up`` stack: broker plus every worker daemon."""
    env = broker_env(env)
    endpoint = env["PLANTD_BROKER_ENDPOINT"]
    for name in WORKER_DAEMONS:
        env[f"PLANTD_{name}_ENDPOINT"] = endpoint
        env[f"PLANTD_{name}_HEALTH_PORT"] = "0"
        env[f"PLANTD_{name}_HEARTBEAT_INTERVAL"] = "0.25"
        env[f"PLANTD_{name}_LOG_BUS"] = env["PLANTD_BROKER_LOG_FRONTEND"]
    for bus in BUSES:
        front = env[f"PLANTD_BROKER_{bus.upper()}_FRONTEND"]
        back = env[f"PLANTD_BROKER_{bus.upper()}_BACKEND"]
        for name in WORKER_DAEMONS:
            # <bus>_bus: where a daemon publishes; <bus>_bus_sub: where it subscribes
            env[f"PLANTD_{name}_{bus.upper()}_BUS_SUB"] = back
            if bus != "log":  # <log>_bus is set above, with the other per-daemon settings
                env[f"PLANTD_{name}_{bus.upper()}_BUS"] = front
    return env


def read_pid_file(home: Path, name: str) -> dict | None:
    try:
        return json.loads((home / "run" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET; HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (daemons started detached are reaped by init, maybe late)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``; reaps our own children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: _reap_and_check(pid), grace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _reap_and_check(pid), 5.0)


def _reap_and_check(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return not pid_alive(pid)


def kill_daemons_in(home: Path) -> None:
    """Kill every daemon that left a pid file in ``home`` (teardown safety net)."""
    run = home / "run"
    if not run.is_dir():
        return
    for pid_file in run.glob("*.pid"):
        info = read_pid_file(home, pid_file.stem)
        if info and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
            kill_pid(info["pid"])


PLANT = [sys.executable, "-m", "plantd.cli.main"]


@dataclass
class PlantRunner:
    """Runs ``plant`` as a subprocess with a given environment (bounded by ``timeout``)."""

    env: dict[str, str]
    calls: list[list[str]] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        return subprocess.run(
            [*PLANT, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )


@dataclass
class BrokerProcess:
    """A broker daemon started with ``plant daemon run broker`` in the foreground."""

    proc: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]  # use for clients/CLI: PLANTD_CLIENT_ENDPOINT points at this broker
    endpoint: str
    health_port: int
    output: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def bus(self, name: str) -> tuple[str, str]:
        """(frontend, backend) endpoints of a bus."""
        up = name.upper()
        return self.env[f"PLANTD_BROKER_{up}_FRONTEND"], self.env[f"PLANTD_BROKER_{up}_BACKEND"]

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def start_broker(env: dict[str, str], home: Path, tag: str = "broker") -> BrokerProcess:
    """Start ``plant daemon run broker`` and wait (bounded) until /healthz passes."""
    out = home / f"{tag}.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [*PLANT, "daemon", "run", "broker"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}: {out.read_text()[-2000:]}")
        info = read_pid_file(home, "broker")
        if info and info.get("pid") == proc.pid and info.get("health_port"):
            status, _, body = http_get(f"http://127.0.0.1:{info['health_port']}/healthz", 1.0)
            if status == 200 and json.loads(body).get("status") == "pass":
                return BrokerProcess(
                    proc, home, env, env["PLANTD_BROKER_ENDPOINT"], int(info["health_port"]), out
                )
        time.sleep(0.05)
    kill_pid(proc.pid)
    raise RuntimeError(f"broker not healthy within {START_TIMEOUT}s: {out.read_text()[-2000:]}")


@pytest.fixture
def plantd_home(tmp_path: Path) -> Iterator[Path]:
    """An isolated PLANTD_HOME; daemons left running in it are killed at teardown."""
    home = tmp_path / "plantd-home"
    home.mkdir()
    yield home
    kill_daemons_in(home)


@pytest.fixture
def plantd_env(plantd_home: Path) -> dict[str, str]:
    """Environment for subprocesses: no inherited PLANTD_*, isolated home and config."""
    return clean_env(plantd_home)


@pytest.fixture
def plant(plantd_env: dict[str, str]) -> PlantRunner:
    """Run ``plant ...`` in a subprocess against the isolated home."""
    return PlantRunner(plantd_env)


@pytest.fixture
def broker(plantd_home: Path, plantd_env: dict[str, str]) -> Iterator[BrokerProcess]:
    """A real broker daemon process on random ports (heartbeat 0.25 s, queue expiry 1 s)."""
    b = start_broker(broker_env(plantd_env), plantd_home)
    try:
        yield b
    finally:
        kill_pid(b.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            b.proc.wait(timeout=1)
