"""Free 127.0.0.1 ports, handed out once per test run, and waiting for a listener."""

from __future__ import annotations

import socket

from tests.support.polling import wait_until

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


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port``."""
    wait_until(lambda: _accepts(port), timeout, what=f"a listener on port {port}")
