"""Pub/sub bus proxies: publishers connect to the XSUB frontend, subscribers to the XPUB backend.

The Go plantd proxy delivered nothing because its frontend was a plain SUB that never
subscribed. XSUB forwards the subscriptions the XPUB side receives, so the proxy carries
exactly the topics somebody wants.

Each proxy runs libzmq's own C proxy (``zmq.proxy_steerable``) in a native thread that
releases the GIL: forwarding costs ~30 us per message in C against several times that in a
Python loop, and no event loop is involved in the forwarding at all. A PAIR control socket
stops it cleanly and reports message counts.
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from plantd.vocabulary import BUSES

log = logging.getLogger("plantd.bus")


@dataclass(frozen=True, slots=True)
class BusSpec:
    """A named bus and its two endpoints."""

    name: str
    frontend: str  # publishers connect here (XSUB binds)
    backend: str  # subscribers connect here (XPUB binds)


#: The buses of a plantd installation and their default endpoints (contract with upstream).
DEFAULT_BUSES = tuple(BusSpec(b.name, b.publish, b.subscribe) for b in BUSES)


class BusProxy:
    """One XSUB->XPUB proxy. ``start()`` binds (raising bind errors), ``stop()`` joins."""

    def __init__(
        self,
        name: str,
        frontend: str,
        backend: str,
        *,
        hwm: int = 10000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.name = name
        self.frontend = frontend
        self.backend = backend
        self.hwm = hwm
        self._ctx = context or zmq.Context.instance()
        self._thread: threading.Thread | None = None
        self._control_addr = f"inproc://plantd-bus-{name}-{id(self):x}"
        self._control: zmq.Socket[bytes] | None = None
        self._control_lock = threading.Lock()  # scrapes and stop() share the control socket
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        self._connected = {"publishers": 0, "subscribers": 0}
        self.bound_frontend: str | None = None
        self.bound_backend: str | None = None

    def start(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        ctl = self._ctx.socket(zmq.PAIR)
        for s in (xsub, xpub, ctl):
            s.setsockopt(zmq.LINGER, 0)
        xsub.setsockopt(zmq.RCVHWM, self.hwm)
        # a subscriber that stops reading loses messages at this mark instead of growing memory
        xpub.setsockopt(zmq.SNDHWM, self.hwm)
        try:
            xsub.bind(self.frontend)
            xpub.bind(self.backend)
            ctl.bind(self._control_addr)
        except zmq.ZMQError:
            for s in (xsub, xpub, ctl):
                s.close()
            raise
        self.bound_frontend = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.bound_backend = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        peer = self._ctx.socket(zmq.PAIR)
        peer.setsockopt(zmq.LINGER, 0)
        peer.connect(self._control_addr)
        self._control = peer
        # connections on each side, for /metrics (read on scrape by connections())
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        self._monitors = {
            "publishers": xsub.get_monitor_socket(events),
            "subscribers": xpub.get_monitor_socket(events),
        }

        def serve() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, ctl)
            except zmq.ZMQError as exc:  # context terminated
                log.debug("bus %s proxy ended: %s", self.name, exc)
            finally:
                for s in (xsub, xpub, ctl):
                    s.close(linger=0)

        self._thread = threading.Thread(target=serve, name=f"bus-{self.name}", daemon=True)
        self._thread.start()
        log.info("bus %s: %s -> %s", self.name, self.bound_frontend, self.bound_backend)

    @property
    def alive(self) -> bool:
        """The proxy thread is forwarding (false before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    def statistics(self) -> dict[str, int]:
        """Messages and bytes through the proxy (libzmq's STATISTICS): ``published`` (in from
        publishers), ``delivered`` (out to subscribers) and their ``_bytes``; {} if stopped."""
        with self._control_lock:
            if self._control is None or not self.alive:
                return {}
            self._control.send(b"STATISTICS")
            if not self._control.poll(1000):
                return {}
            frames = self._control.recv_multipart()
        values = [struct.unpack("=Q", f)[0] for f in frames]
        # frontend in (msgs, bytes), frontend out, backend in, backend out
        return {
            "published": values[0],
            "published_bytes": values[1],
            "delivered": values[6],
            "delivered_bytes": values[7],
        }

    def connections(self) -> dict[str, int]:
        """Connected ``publishers`` and ``subscribers`` now (from socket monitor events)."""
        for side, monitor in self._monitors.items():
            while monitor.poll(0):
                event = recv_monitor_message(monitor)["event"]
                change = 1 if event == zmq.EVENT_ACCEPTED else -1
                self._connected[side] = max(0, self._connected[side] + change)
        return dict(self._connected)

    def stop(self, timeout: float = 2.0) -> None:
        with self._control_lock:
            self._stop_proxy(timeout)
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        self._monitors = {}

    def _stop_proxy(self, timeout: float) -> None:
        if self._control is not None:
            try:
                self._control.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
