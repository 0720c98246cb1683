"""sd_notify from the lifecycle: a real daemon process against a fake notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.daemons.systemd import Notifier
from tests.support.broker import BrokerProcess, broker_env
from tests.support.ports import tcp
from tests.support.processes import DAEMON_CMD, read_pid_file, stop_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's (short path: AF_UNIX allows ~107 bytes)."""
    directory = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def receive(sock: socket.socket, deadline: float) -> list[str] | None:
    """The next datagram's lines, or None once ``deadline`` (monotonic) has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock.settimeout(remaining)
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        return None


def healthz_status(home: Path, name: str) -> int:
    facts = read_pid_file(home, name)
    assert facts is not None
    url = f"http://127.0.0.1:{facts['health_port']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_ready_after_health_passes_then_watchdog_pings_then_stopping(
    broker: BrokerProcess, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    env = dict(
        broker.env,
        PLANTD_ECHO_ENDPOINT=broker.endpoint,
        PLANTD_ECHO_HEALTH_PORT="0",
        PLANTD_ECHO_HEARTBEAT_INTERVAL="0.25",
        NOTIFY_SOCKET=path,
        WATCHDOG_USEC="200000",  # pings every 0.1 s
    )
    echo = subprocess.Popen(
        [*DAEMON_CMD, "echo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while "READY=1" not in seen:
            lines = receive(sock, deadline)
            assert lines is not None, f"no READY=1 within 20 s; got {seen}"
            seen.extend(lines)
        # READY=1 means serving: /healthz already answers 200
        assert healthz_status(broker.home, "echo") == 200
        assert any(line.startswith("STATUS=echo serving") for line in seen)
        assert "STATUS=echo starting" in seen  # sent before readiness
        pings = 0
        deadline = time.monotonic() + 5
        while pings < 3:
            lines = receive(sock, deadline)
            assert lines is not None, f"only {pings} WATCHDOG=1 pings within 5 s"
            pings += lines.count("WATCHDOG=1")
        os.kill(echo.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:
            lines = receive(sock, deadline)
            assert lines is not None, "no STOPPING=1 after SIGTERM"
            if "STOPPING=1" in lines:
                break
        assert echo.wait(timeout=15) == 0
    finally:
        stop_process(echo)


def test_no_ready_when_the_daemon_never_serves(
    plantd_env: dict[str, str], notify_socket: tuple[socket.socket, str]
) -> None:
    """A broker whose endpoint port is taken exits 6 without ever being healthy: systemd
    hears it start and stop, never READY=1 (so the unit fails instead of looking up)."""
    sock, path = notify_socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = dict(
            broker_env(plantd_env),
            PLANTD_BROKER_ENDPOINT=tcp(held.getsockname()[1]),
            NOTIFY_SOCKET=path,
        )
        broker = subprocess.run(
            [*DAEMON_CMD, "broker"], env=env, capture_output=True, text=True, timeout=30
        )
    assert broker.returncode == 6, broker.stderr
    seen: list[str] = []
    while (lines := receive(sock, time.monotonic() + 0.5)) is not None:
        seen.extend(lines)
    assert "STATUS=broker starting" in seen and "STOPPING=1" in seen
    assert "READY=1" not in seen


def test_no_notify_socket_is_a_no_op() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False


def test_abstract_namespace_address_and_watchdog_interval() -> None:
    name = f"plantd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval == 15.0
        assert notifier.ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_watchdog_meant_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval is None
