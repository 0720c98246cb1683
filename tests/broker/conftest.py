"""Fixtures for broker tests: a real broker process and peer processes on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

__all__ = ["free_port"]

PEERS = str(Path(__file__).with_name("peers.py"))


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


@pytest.fixture
def peer() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a peer process (see peers.py); every one is stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, PEERS, *args])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _stop(proc)


@pytest.fixture
def broker(peer: Callable[..., subprocess.Popen[bytes]]) -> str:
    """Endpoint of a real broker process with short heartbeats."""
    port = free_port()
    peer("plantd-broker", f"tcp://127.0.0.1:{port}")
    wait_listening(port)
    return f"tcp://127.0.0.1:{port}"
