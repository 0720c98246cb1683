"""A service's queue of waiting requests: one FIFO lane per client, served round robin.

Bounded in bytes (whole queue and per client) rather than in requests, so a burst of small
requests fits while one client's burst cannot starve the others: each client's next request
is served in turn, whatever the length of the other lanes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    client: bytes
    cost: int


T = TypeVar("T", bound="Queued")


class FairQueue(Generic[T]):
    """Lanes keyed by client routing id; ``pop`` takes the head of the next lane in turn."""

    __slots__ = ("_lane_bytes", "_lanes", "_len", "bytes")

    def __init__(self) -> None:
        self._lanes: OrderedDict[bytes, deque[T]] = OrderedDict()
        self._lane_bytes: dict[bytes, int] = {}
        self._len = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[T]:
        for lane in self._lanes.values():
            yield from lane

    def lanes(self) -> int:
        return len(self._lanes)

    def lane_bytes(self, client: bytes) -> int:
        return self._lane_bytes.get(client, 0)

    def push(self, item: T) -> None:
        client = item.client
        lane = self._lanes.get(client)
        if lane is None:
            self._lanes[client] = deque((item,))
            self._lane_bytes[client] = item.cost
        else:
            lane.append(item)
            self._lane_bytes[client] += item.cost
        self.bytes += item.cost
        self._len += 1

    def push_front(self, item: T) -> None:
        """Put ``item`` back first in line (a request that never reached its worker)."""
        self.push(item)
        self._lanes[item.client].rotate(1)  # it was appended: move it to the head of its lane
        self._lanes.move_to_end(item.client, last=False)

    def pop(self) -> T:
        lanes = self._lanes
        client = next(iter(lanes))
        lane = lanes[client]
        item = lane.popleft()
        self.bytes -= item.cost
        self._len -= 1
        if lane:
            lanes.move_to_end(client)
            self._lane_bytes[client] -= item.cost
        else:
            del lanes[client]
            del self._lane_bytes[client]
        return item

    def expire(self, due: Callable[[T], bool]) -> list[T]:
        """Take out, oldest first in each lane, the requests for which ``due`` holds."""
        out: list[T] = []
        for client in list(self._lanes):
            lane = self._lanes[client]
            while lane and due(lane[0]):
                item = lane.popleft()
                self._lane_bytes[client] -= item.cost
                self.bytes -= item.cost
                self._len -= 1
                out.append(item)
            if not lane:
                del self._lanes[client]
                del self._lane_bytes[client]
        return out
