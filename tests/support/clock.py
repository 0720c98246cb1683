"""A clock under the test's control."""

from __future__ import annotations


class FakeClock:
    """A clock the test moves by hand (``clock.now += 6``): TTLs without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
