"""Which broker a client talks to, without I/O: the Freelance pattern's "sticky" choice with
Lazy Pirate's backoff (ZeroMQ Guide, ch. 4).

A client keeps using the broker that answers (``current``). A timeout or a dead connection
marks it down and moves ``current`` to the next broker in the list that is not backing off;
a broker that failed is skipped for a backoff that doubles per consecutive failure (up to
``backoff_max``), so a dead one costs one probe per backoff, not one per request. When
every broker is down the one whose backoff ends first is tried (:meth:`Brokers.pick` says
how long to wait first). One answer marks a broker up and resets its backoff.

:class:`plantd.client.Client` and :class:`plantd.client.SyncClient` drive this; the console
reads :meth:`Brokers.states` to show which brokers it reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROBE_EVERY", "BrokerDied", "BrokerState", "Brokers"]

UP, DOWN, UNKNOWN = "up", "down", "unknown"
#: with several brokers, a reply awaited this long makes the client check the broker's TCP
#: port (and again as often): a dead broker is left at once, not after the whole timeout
PROBE_EVERY = 0.5


class BrokerDied(Exception):
    """The broker a request waits on refuses connections (killed, its host down)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class BrokerState:
    """What a client knows of one broker."""

    endpoint: str
    #: "up" (answered last time), "down" (timed out or refused), "unknown" (never used)
    state: str = UNKNOWN
    #: consecutive failures (0 once it answers)
    failures: int = 0
    #: monotonic time before which the client does not try it again (while down)
    retry_at: float = 0.0
    #: why it is down (one line), None while up
    reason: str | None = None


class Brokers:
    """The broker choice of one client over ``endpoints`` (in preference order)."""

    def __init__(
        self, endpoints: Sequence[str], *, backoff_min: float = 0.25, backoff_max: float = 4.0
    ) -> None:
        if not endpoints:
            raise ValueError("a client needs at least one broker endpoint")
        self.endpoints = tuple(endpoints)
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._states = {e: BrokerState(e) for e in self.endpoints}
        self._at = 0
        #: times ``current`` moved to another broker
        self.failovers = 0

    @property
    def current(self) -> str:
        return self.endpoints[self._at]

    @property
    def several(self) -> bool:
        return len(self.endpoints) > 1

    def states(self) -> list[BrokerState]:
        """Every broker's state, in list order (copies)."""
        return [BrokerState(**vars(self._states[e])) for e in self.endpoints]

    def state(self, endpoint: str) -> BrokerState:
        return self._states[endpoint]

    def pick(self, now: float) -> tuple[str, float]:
        """``(endpoint, wait)``: the broker for the next attempt and how long to wait before
        it (0 unless every broker is backing off)."""
        cur = self._states[self.current]
        if cur.state != DOWN or cur.retry_at <= now:
            return cur.endpoint, 0.0
        for i in self._order():
            st = self._states[self.endpoints[i]]
            if st.state != DOWN or st.retry_at <= now:
                self._move(i)
                return st.endpoint, 0.0
        i = min(self._order(), key=lambda j: self._states[self.endpoints[j]].retry_at)
        self._move(i)
        return self.current, max(0.0, self._states[self.current].retry_at - now)

    def succeeded(self, endpoint: str) -> None:
        """``endpoint`` answered: it is up, its backoff is reset."""
        st = self._states[endpoint]
        st.state, st.failures, st.retry_at, st.reason = UP, 0, 0.0, None

    def failed(self, endpoint: str, now: float, reason: str) -> None:
        """``endpoint`` timed out or refused: back off from it; if it was the current
        broker, the next one that is not backing off becomes current."""
        st = self._states[endpoint]
        st.failures += 1
        st.state, st.reason = DOWN, reason
        st.retry_at = now + min(self.backoff_max, self.backoff_min * 2 ** (st.failures - 1))
        if endpoint == self.current and self.several:
            self.pick(now)

    def _order(self) -> list[int]:
        """Indexes after the current one, wrapping, current last."""
        n = len(self.endpoints)
        return [(self._at + k) % n for k in range(1, n + 1)]

    def _move(self, i: int) -> None:
        if i != self._at:
            self._at = i
            self.failovers += 1
