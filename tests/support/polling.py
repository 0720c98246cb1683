"""The one bounded polling helper (and its async twin): every "wait until X" in the tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition polled with :func:`wait_until` never held (an AssertionError: a test failure)."""


def _message(what: str, timeout: float, polls: int, last: object) -> str:
    return f"{what}: not met within {timeout}s ({polls} polls, last value {last!r})"


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy and return
    that; raise :class:`WaitTimeout` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        value = predicate()
        polls += 1
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, polls, value))
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
    pause: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Any:
    """:func:`wait_until` in an event loop: ``predicate`` may be sync or async, and the wait
    between polls is ``pause(interval)`` (a Textual pilot passes ``pilot.pause``)."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        polls += 1
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, polls, value))
        await pause(interval)


def seconds_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """:func:`wait_until`, returning how many seconds the condition took (for FIGURE lines)."""
    start = time.monotonic()
    wait_until(predicate, timeout, interval, what)
    return time.monotonic() - start
