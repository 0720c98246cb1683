"""Broker processes and their settings: ``plant daemon run broker`` on random ports, the
environment of a whole ``plant up`` stack, peers (see peers.py), and raw MDP frames."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq

from tests.support.polling import wait_until
from tests.support.ports import free_port, tcp
from tests.support.processes import PLANT, START_TIMEOUT, wait_healthy

BUSES = ("state", "event", "metric", "log")
#: daemons `plant up` starts besides the broker (their PLANTD_<NAME>_* settings get test ports)
WORKER_DAEMONS = ("ECHO", "STATE", "LOGGER", "METRIC", "PROXY")
#: the peer processes script: ``python PEERS ROLE ENDPOINT [SERVICE]``
PEERS = str(Path(__file__).with_name("peers.py"))


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
    env["PLANTD_PROXY_LISTEN"] = f"127.0.0.1:{free_port()}"  # the proxy's HTTP port
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
    health_port = wait_healthy(proc, home, "broker", out, START_TIMEOUT)
    return BrokerProcess(proc, home, env, env["PLANTD_BROKER_ENDPOINT"], health_port, out)


def daemon_env(broker: BrokerProcess, name: str, **extra: str) -> dict[str, str]:
    """``broker.env`` plus settings for worker daemon ``name`` attached to that broker."""
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


def start_peer(*args: str) -> subprocess.Popen[bytes]:
    """``python peers.py ARGS`` (a worker, broker or client role, see peers.py)."""
    return subprocess.Popen([sys.executable, PEERS, *args])


def wait_service(endpoint: str, service: str, timeout: float = 10.0) -> None:
    """Until the broker at ``endpoint`` answers mmi.service ``200`` for ``service``."""
    from plantd.client import SyncClient

    with SyncClient(endpoint, timeout=1.0) as c:
        wait_until(lambda: c.mmi_service(service) == "200", timeout, what=f"{service} registered")


class RawDealer:
    """A raw DEALER for hand-built frames."""

    def __init__(self, endpoint: str) -> None:
        from plantd.security.settings import default_client

        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        default_client().apply(self.sock)  # the test process's CURVE keys (or none)
        self.sock.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 5.0) -> list[bytes]:
        if not self.sock.poll(timeout * 1000):
            raise TimeoutError("no message")
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(0)
