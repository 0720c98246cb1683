"""Messages held for peers whose pipe is full, so a slow reader loses nothing.

A ROUTER cannot block on one peer, so when a peer's pipe is at its high-water mark the
server keeps that peer's messages here, in order, and retries them on every later drain and
tick. Bounded per peer in bytes; what exceeds the bound, or waits on a peer that stopped
reading, is handed back to be counted and warned. No I/O here: the server sends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

#: bytes a held message costs per frame beyond its payload (Python objects)
FRAME_OVERHEAD = 32


def footprint(msg: list[bytes]) -> int:
    return sum(map(len, msg)) + FRAME_OVERHEAD * len(msg)


class Held(deque):  # type: ignore[type-arg]
    """One peer's waiting messages; ``since``: when it last took one (or started waiting)."""

    __slots__ = ("bytes", "since")

    def __init__(self, since: float) -> None:
        super().__init__()
        self.bytes = 0
        self.since = since


class Backlog:
    """Per-peer FIFO of unsent messages (first frame = routing id)."""

    __slots__ = ("bytes", "limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        #: peer -> its waiting messages (a plain dict: the server tests it per message)
        self.waiting: dict[bytes, Held] = {}

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def __contains__(self, peer: bytes) -> bool:
        return peer in self.waiting

    def __len__(self) -> int:
        return sum(len(h) for h in self.waiting.values())

    def hold(self, msg: list[bytes], now: float) -> bool:
        """Keep ``msg`` behind its peer's other waiting messages; False if over the bound."""
        peer = msg[0]
        held = self.waiting.get(peer)
        if held is None:
            held = self.waiting[peer] = Held(now)
        size = footprint(msg)
        if held and held.bytes + size > self.limit:
            return False
        held.append(msg)
        held.bytes += size
        self.bytes += size
        return True

    def peers(self) -> Iterator[tuple[bytes, Held]]:
        return iter(list(self.waiting.items()))

    def sent(self, peer: bytes, now: float) -> None:
        """The head message of ``peer`` went out."""
        held = self.waiting[peer]
        size = footprint(held.popleft())
        held.bytes -= size
        self.bytes -= size
        held.since = now
        if not held:
            del self.waiting[peer]

    def drop(self, peer: bytes) -> list[list[bytes]]:
        """Forget ``peer``'s messages and return them."""
        held = self.waiting.pop(peer, None)
        if held is None:
            return []
        self.bytes -= held.bytes
        return list(held)

    def stalled(self, now: float, after: float) -> list[bytes]:
        """Peers that took no message for ``after`` seconds."""
        return [peer for peer, held in self.waiting.items() if now - held.since >= after]
