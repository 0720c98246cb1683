"""A userspace TCP fault relay on loopback: pass, delay, blackhole or reset traffic.

Sits between a ZeroMQ peer and the broker (peer connects to the relay's port, the relay
connects to the broker) so tests can cut, stall or slow a link without root. Runs its own
event loop in a thread so blocking test code can flip modes while traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from enum import Enum


class Mode(Enum):
    PASS = "pass"  # forward bytes as they come
    DELAY = "delay"  # forward each chunk after `delay` seconds
    BLACKHOLE = "blackhole"  # accept and read, forward nothing (a silent partition)
    RESET = "reset"  # close every connection with RST and refuse new ones the same way


class Relay:
    """``Relay(target_port).start()`` -> listening port; ``set_mode(Mode.X)`` any time."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.PASS
        self.delay = 0.0
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> int:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = fut.result(5)
        return self.port

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        def apply() -> None:
            self.mode = mode
            self.delay = delay
            if mode is Mode.RESET:
                for w in list(self._writers):
                    _reset(w)
                self._writers.clear()

        self._loop.call_soon_threadsafe(apply)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                _reset(w)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.RESET:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            if self.mode is Mode.BLACKHOLE:
                continue
            if self.mode is Mode.DELAY and self.delay > 0:
                await asyncio.sleep(self.delay)
            if writer.is_closing():
                return
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) so the peer sees a reset, not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.close()
