"""systemd's notify protocol (``sd_notify``), stdlib only, for ``Type=notify`` units.

systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and, with
``WatchdogSec=``, ``$WATCHDOG_USEC``; the daemon sends newline-separated ``KEY=VALUE`` datagrams:
``READY=1`` once serving, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` pings and
``STOPPING=1``. Without ``$NOTIFY_SOCKET`` every call is a no-op, so the lifecycle calls it
unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

_log = logging.getLogger("plantd.systemd")


class Notifier:
    """Sends notifications to systemd's notify socket, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address: str | None = address or None
        self.watchdog_interval: float | None = self._watchdog_interval(env)

    def _watchdog_interval(self, env: Mapping[str, str]) -> float | None:
        """Half of ``$WATCHDOG_USEC`` in seconds (as sd_watchdog_enabled advises), when the
        watchdog is meant for this process (``$WATCHDOG_PID`` unset or ours)."""
        if self.address is None:
            return None
        pid = env.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        return usec / 2_000_000 if usec > 0 else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (logged once at debug) if it could not go."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            _log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")
