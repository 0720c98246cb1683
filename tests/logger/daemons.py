"""Helpers for the daemon and CLI tests: run ``plant`` and the logger/metric daemons as real
processes against the conftest broker daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PLANT, BrokerProcess, http_get, kill_pid, read_pid_file

# the daemon as `plant daemon start` launches it, without loading Typer
DAEMON_CMD = [sys.executable, "-m", "plantd.daemons.run"]


def plant(
    env: dict[str, str], *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLANT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def plant_popen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PLANT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def daemon_env(broker: BrokerProcess, name: str, **extra: str) -> dict[str, str]:
    up = name.upper()
    env = dict(broker.env)
    env.update(
        {
            f"PLANTD_{up}_ENDPOINT": broker.endpoint,
            f"PLANTD_{up}_HEALTH_PORT": "0",
            f"PLANTD_{up}_HEARTBEAT_INTERVAL": "0.25",
            f"PLANTD_{up}_LOG_BUS": broker.bus("log")[0],
            f"PLANTD_{up}_LOG_LEVEL": "debug",
        }
    )
    env.update({f"PLANTD_{up}_{k.upper()}": v for k, v in extra.items()})
    return env


class Daemon:
    """A daemon process started with :data:`DAEMON_CMD`, healthy before it is returned."""

    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.name = name
        self.home = home
        self.out = home / f"{name}.out"
        with self.out.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*DAEMON_CMD, name],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited {self.proc.returncode}: {self.text()[-2000:]}")
            info = read_pid_file(home, name)
            if info and info.get("pid") == self.proc.pid and info.get("health_port"):
                self.health_port = int(info["health_port"])
                status, _, body = http_get(f"http://127.0.0.1:{self.health_port}/healthz", 1.0)
                if status == 200 and json.loads(body)["status"] in ("pass", "warn"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} not healthy within 20s: {self.text()[-2000:]}")

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> int | None:
        kill_pid(self.proc.pid)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
