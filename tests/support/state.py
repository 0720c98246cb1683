"""The state service as real processes: a broker daemon plus ``org.plantd.State`` daemons on
random ports in a temporary PLANTD_HOME, raw requests to it and ``plant state watch``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.client.errors import PlantdError
from tests.support.broker import BrokerProcess, stack_env, start_broker
from tests.support.processes import PLANT, START_TIMEOUT, clean_env, kill_pid, wait_healthy

SERVICE = "org.plantd.State"


def state_settings(env: dict[str, str], **extra: Any) -> dict[str, str]:
    """``env`` with state daemon settings for tests (few workers, fast reaper)."""
    env = dict(env)
    env.update(
        PLANTD_STATE_WORKERS="4",
        PLANTD_STATE_REAP_INTERVAL="0.1",
        PLANTD_STATE_LOG_LEVEL="info",
        PLANTD_STATE_HEALTH_PORT="0",
    )
    env.update({f"PLANTD_STATE_{k.upper()}": str(v) for k, v in extra.items()})
    return env


class StateProcess:
    """``python -m plantd.daemons.run state`` as a child process (output in a file)."""

    def __init__(self, env: dict[str, str], home: Path, tag: str = "state") -> None:
        self.env = env
        self.home = home
        self.out = home / f"{tag}.{time.monotonic_ns()}.out"
        with self.out.open("wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plantd.daemons.run", "state"],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> StateProcess:
        """Until /healthz passes (store open, a worker registered); raise if it exits."""
        wait_healthy(self.proc, self.home, "state", self.out, timeout)
        return self

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL (a crash), reaped."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after a grace), reaped; the exit code."""
        kill_pid(self.pid, grace=10.0)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class Stack:
    """A broker daemon plus state daemons, all killed by PID at teardown."""

    home: Path
    env: dict[str, str]
    broker: BrokerProcess
    states: list[StateProcess]

    @property
    def endpoint(self) -> str:
        return self.broker.endpoint

    @property
    def state(self) -> StateProcess:
        return self.states[-1]

    @property
    def db(self) -> Path:
        return self.home / "data" / "state.db"

    def bus(self) -> tuple[str, str]:
        return self.broker.bus("state")

    def start_state(self, env: dict[str, str] | None = None, wait: bool = True) -> StateProcess:
        proc = StateProcess(env or self.env, self.home)
        self.states.append(proc)
        return proc.wait_ready() if wait else proc

    def restart_broker(self) -> None:
        kill_pid(self.broker.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.broker.proc.wait(timeout=5)
        self.broker = start_broker(self.broker.env, self.home, tag="broker2")

    def client(self, timeout: float = 5.0) -> Any:
        from plantd.client import SyncClient

        return SyncClient(self.endpoint, timeout=timeout)

    def close(self) -> None:
        for proc in self.states:
            proc.stop()
        kill_pid(self.broker.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.broker.proc.wait(timeout=5)


def make_stack(home: Path, start_state: bool = True, **settings: Any) -> Stack:
    home.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        # free_port() can hand out the same port twice: retry on a collision
        env = state_settings(stack_env(clean_env(home)), **settings)
        if len({v for k, v in env.items() if k.startswith("PLANTD_BROKER_") and "tcp://" in v}) < 9:
            continue
        try:
            broker = start_broker(env, home)
            break
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    stack = Stack(home, env, broker, [])
    if start_state:
        try:
            stack.start_state()
        except BaseException:
            stack.close()
            raise
    return stack


def request(client: Any, op: str, body: Any) -> dict[str, Any]:
    """Send ``[op, body]`` (dict -> JSON, bytes verbatim) and return the reply document."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    frames = client.request(SERVICE, op.encode(), raw)
    return json.loads(frames[-1])


def data(client: Any, op: str, body: Any) -> Any:
    doc = request(client, op, body)
    assert doc.get("success") is True, doc
    return doc["data"]


def watch_proc(stack: Stack, *args: str) -> subprocess.Popen[str]:
    """``plant state watch -o json ARGS`` against ``stack``, output piped."""
    return subprocess.Popen(
        [*PLANT, "state", "watch", "-o", "json", *args],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def write_until_ok(stack: Stack, scope: str, value: int, deadline: float) -> int:
    """One acknowledged write of ``k`` in ``scope`` (retried with the same request_id across
    outages); its revision."""
    with stack.client(timeout=2.0) as c:
        while True:
            try:
                reply = data(
                    c,
                    "state-set",
                    {"service": scope, "key": "k", "value": value, "request_id": f"w{value}"},
                )
                return int(reply["revision"])
            except PlantdError:
                assert time.monotonic() < deadline, "writes never resumed"
                time.sleep(0.1)
