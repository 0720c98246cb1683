"""Following a bus from the CLI: `plant bus tail`, `plant log tail -f`, `plant metric watch`.

One loop for the three: subscribe, hand every message to the command's ``show``, stop after
``count`` shown messages, and fail with the TIMEOUT exit code after ``idle`` seconds of
silence. ``plantd.client`` is imported only when a command follows, so `plant --help` stays
fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plantd.cli.exitcodes import CliError, ExitCode


async def follow_bus(
    endpoint: str,
    topics: list[str],
    show: Callable[[str, Any], bool],
    *,
    count: int | None,
    idle: float | None,
    silence: str,
) -> int:
    """Messages of ``topics`` on ``endpoint`` to ``show(topic, doc)`` (True if it showed the
    message) until ``count`` were shown; ``CliError`` "``silence`` within Ns" after ``idle``
    seconds without a message."""
    from plantd.client import Subscriber

    sub = Subscriber(endpoint, topics=topics)
    shown = 0
    try:
        while count is None or shown < count:
            try:
                topic, doc = await sub.recv(timeout=idle)
            except TimeoutError:
                raise CliError(f"{silence} within {idle:g}s", ExitCode.TIMEOUT) from None
            if show(topic, doc):
                shown += 1
    finally:
        sub.close()
    return ExitCode.OK
