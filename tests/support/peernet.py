"""A partitionable peer network for etcd members on loopback, without root.

Every member advertises a relay port as its peer URL (its raft peers connect there) and the
relay forwards to the member's real peer port. ``isolate(name)`` cuts that member off both
ways: its own relay refuses every connection (nobody reaches it) and the other relays refuse
connections that the isolated member's process opened (it reaches nobody), found by the
connection's source port in /proc/net/tcp and the owning process's /proc/PID/fd. Existing
peer connections are reset at once. The member keeps running and keeps serving its client
port: exactly a host whose peer links are cut (a network partition), while its clients still
reach it. ``heal()`` lets connections through again (the members reconnect by themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tests.support.relay import _reset

T = TypeVar("T")


def socket_owner(local_port: int, remote_port: int, pids: dict[int, str]) -> str | None:
    """The name (from ``pids``) of the process owning the loopback TCP socket
    ``127.0.0.1:local_port -> 127.0.0.1:remote_port``, if one of them does."""
    want = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if (parts[1], parts[2]) == want:
                inode = parts[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid, name in pids.items():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return name
    return None


class PeerNet:
    """Relays in front of the members' peer ports; ``add(name, target_port)`` -> relay port."""

    def __init__(self, pids: Callable[[], dict[int, str]]) -> None:
        self._pids = pids  # live member processes: pid -> member name
        self.isolated: set[str] = set()
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []
        self._links: set[tuple[asyncio.StreamWriter, ...]] = set()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the relays' loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def add(self, name: str, target_port: int) -> int:
        async def start() -> int:
            server = await asyncio.start_server(
                lambda r, w: self._accept(name, target_port, r, w), "127.0.0.1", 0
            )
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        return self._run(start())

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other member, both ways, from now on."""

        async def apply() -> None:
            self.isolated.add(name)
            for link in list(self._links):
                for w in link:
                    _reset(w)

        self._run(apply())

    def heal(self) -> None:
        async def apply() -> None:
            self.isolated.clear()

        self._run(apply())

    def close(self) -> None:
        async def stop() -> None:
            for s in self._servers:
                s.close()
            for link in list(self._links):
                for w in link:
                    _reset(w)

        with contextlib.suppress(Exception):
            self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _cut(self, owner: str, writer: asyncio.StreamWriter, relay_port: int) -> bool:
        if not self.isolated:
            return False
        if owner in self.isolated:
            return True
        peer_port = writer.get_extra_info("peername")[1]
        sender = socket_owner(peer_port, relay_port, self._pids())
        return sender in self.isolated

    async def _accept(
        self, owner: str, target: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        relay_port = writer.get_extra_info("sockname")[1]
        if self._cut(owner, writer, relay_port):
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            _reset(writer)
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._links.discard(link)
            for w in link:
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        if writer.is_closing():
            return
        writer.write(data)
        await writer.drain()
    writer.close()
