"""Publishes the samples of its sources on the ``metric`` bus, each at its own rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from plantd.metric import topic_for
from plantd.metric.sources import Source

__all__ = ["MetricProducer"]

log = logging.getLogger(__name__)


class MetricProducer:
    """``start()`` one task per source; ``stop()`` ends them and closes the publisher."""

    def __init__(self, endpoint: str, sources: list[Source], *, publisher: Any = None) -> None:
        if publisher is None:
            from plantd.client.bus import Publisher

            publisher = Publisher(endpoint)
        self.endpoint = endpoint
        self.sources = sources
        self.publisher = publisher
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self._tasks: list[asyncio.Task[None]] = []

    def publish(self, samples: list[dict[str, Any]]) -> None:
        for s in samples:
            if self.publisher.publish_nowait(topic_for(s["device"]), s):
                self.published += 1
            else:
                self.dropped += 1

    async def _run_source(self, source: Source) -> None:
        interval = 1.0 / source.rate
        # sample on a fixed grid (no drift), skipping ticks the loop could not keep up with
        next_at = time.monotonic()
        while True:
            try:
                self.publish(source.samples(time.time()))
            except Exception:
                self.errors += 1
                log.exception("metric source %s failed", source.device)
            next_at += interval
            now = time.monotonic()
            if next_at < now:
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    def start(self) -> None:
        for source in self.sources:
            name = f"metric.source.{source.device}"
            self._tasks.append(asyncio.create_task(self._run_source(source), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.publisher.close()
