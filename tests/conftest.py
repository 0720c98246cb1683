"""Fixtures shared by every test directory; each is a thin wrapper around tests/support/.

Every process a fixture starts is killed by PID at teardown and every wait is bounded, so a
hung daemon fails one test instead of the whole run.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, broker_env, start_broker, start_peer
from tests.support.bus import Bus, start_bus
from tests.support.keyring import use_in_this_process
from tests.support.modules import running_broker
from tests.support.ports import free_port, tcp, wait_listening
from tests.support.processes import PlantRunner, clean_env, kill_daemons_in, kill_pid, stop_process


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_keyring: the test's PLANTD_HOME starts without the session keyring"
    )
    config.addinivalue_line(
        "markers",
        "insecure: foreign peers that cannot do CURVE: PLANTD_SECURITY=off (loopback only)"
        " for the test process and every process it starts",
    )
    use_in_this_process()


@pytest.fixture(autouse=True)
def _security_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Tests marked ``insecure`` run without CURVE; every test starts from the
    environment's security (the process default is resolved anew)."""
    from plantd.security import settings

    if request.node.get_closest_marker("insecure") is not None:
        monkeypatch.setenv("PLANTD_SECURITY", "off")
    settings.install(None)
    yield
    settings.install(None)


@pytest.fixture
def plantd_home(tmp_path: Path) -> Iterator[Path]:
    """An isolated PLANTD_HOME; daemons left running in it are killed at teardown."""
    home = tmp_path / "plantd-home"
    home.mkdir()
    yield home
    kill_daemons_in(home)


@pytest.fixture
def plantd_env(plantd_home: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for subprocesses: no inherited PLANTD_*, isolated home and config, a copy
    of the session keyring (unless marked ``no_keyring``)."""
    keyring = request.node.get_closest_marker("no_keyring") is None
    return clean_env(plantd_home, keyring=keyring)


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


@pytest.fixture
def peer() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a peer process (see tests/support/peers.py); every one is stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = start_peer(*args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture
def broker_endpoint(peer: Callable[..., subprocess.Popen[bytes]]) -> str:
    """Endpoint of a bare broker peer process (no daemon lifecycle) with short heartbeats."""
    port = free_port()
    peer("plantd-broker", tcp(port))
    wait_listening(port)
    return tcp(port)


@pytest.fixture
async def loop_broker() -> AsyncIterator[str]:
    """A real broker running in the test's event loop; yields its endpoint."""
    async with running_broker() as endpoint:
        yield endpoint


@pytest.fixture
def make_bus() -> Iterator[Callable[[str], Bus]]:
    """Start a bus proxy on ephemeral ports: ``make_bus("log") -> Bus``."""
    proxies = []

    def start(name: str) -> Bus:
        proxy, bus = start_bus(name)
        proxies.append(proxy)
        return bus

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def log_bus(make_bus: Callable[[str], Bus]) -> Bus:
    return make_bus("log")


@pytest.fixture
def event_bus(make_bus: Callable[[str], Bus]) -> Bus:
    return make_bus("event")
