"""One copy of each bus message when a subscriber listens to several brokers, and the gaps
in sequence-numbered streams, without I/O.

Publishers publish every message to every broker's bus, so a subscriber of all of them
receives each message once per broker (in any interleaving). What identifies a message
depends on its payload (docs/protocol.md, "Buses with several brokers"):

- a state change (``revision`` and ``op``): ``(revision, scope, key, op)``; gaps in the
  state bus are the state watch's business (it refills from the service's history);
- a sequence-numbered record (``seq``, as log records carry): ``seq`` per source
  ``(service, host, pid)``; a ``seq`` never seen once the window has moved past it is a
  gap, counted and reported;
- anything else (metric samples, module events): the bytes of topic and payload, within
  the recent window (two identical messages within it collapse: give such payloads a
  ``seq`` or an id when repeats are meaningful).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["BusDedup"]

#: sources of sequence numbers remembered (publisher processes), oldest forgotten first
MAX_SOURCES = 4096


class _Sequence:
    """The sequence numbers of one source: every number at or below ``floor`` is settled
    (seen, or counted missing); ``seen`` holds those above it."""

    __slots__ = ("floor", "seen", "top")

    def __init__(self, first: int) -> None:
        self.floor = first - 1
        self.top = first - 1
        self.seen: set[int] = set()


class BusDedup:
    """Decides for each received message whether the application gets it.

    ``window``: how many sequence numbers (or recent messages) a late copy may trail by;
    0 with a single broker (no copies: a missing number is a gap at once).
    ``by_content``: drop byte-identical messages within the window (only with copies).
    """

    def __init__(self, *, window: int = 256, by_content: bool = True) -> None:
        self.window = window
        self.by_content = by_content
        self._recent: OrderedDict[Hashable, None] = OrderedDict()
        self._recent_max = max(window * 16, 1024)
        self._sources: OrderedDict[tuple[Any, ...], _Sequence] = OrderedDict()
        #: copies dropped
        self.duplicates = 0
        #: sequence numbers never received (each counted once)
        self.gaps = 0
        #: numbers that arrived after being counted missing (dropped: the window is passed)
        self.late = 0

    def accept(self, topic: bytes, payload: bytes, doc: Any) -> bool:
        """True to deliver this message, False for a copy already delivered."""
        if isinstance(doc, dict):
            rev, seq = doc.get("revision"), doc.get("seq")
            if type(rev) is int and isinstance(doc.get("op"), str):
                return self._first(("rev", rev, doc.get("scope"), doc.get("key"), doc["op"]))
            if type(seq) is int:
                source = (topic, doc.get("service"), doc.get("host"), doc.get("pid"))
                return self._sequence(source, seq)
        if not self.by_content:
            return True
        digest = hashlib.blake2b(payload, digest_size=16, key=topic[:64]).digest()
        return self._first(("raw", digest))

    def _first(self, key: Hashable) -> bool:
        if key in self._recent:
            self.duplicates += 1
            return False
        self._recent[key] = None
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)
        return True

    def _sequence(self, source: tuple[Any, ...], seq: int) -> bool:
        track = self._sources.get(source)
        if track is None:
            track = self._sources[source] = _Sequence(seq)
            if len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        if seq <= track.floor:
            if seq > track.floor - self.window or self.window == 0:
                self.duplicates += 1  # a copy of a settled number
            else:
                self.late += 1
            return False
        if seq in track.seen:
            self.duplicates += 1
            return False
        track.seen.add(seq)
        track.top = max(track.top, seq)
        self._settle(track)
        return True

    def _settle(self, track: _Sequence) -> None:
        """Move the floor up to ``top - window``: numbers passed without being seen are gaps."""
        floor = track.top - self.window
        if floor <= track.floor:
            return
        settled = [s for s in track.seen if s <= floor]
        self.gaps += (floor - track.floor) - len(settled)
        track.seen.difference_update(settled)
        track.floor = floor
