"""Forward stored records to Grafana Loki's push API (``POST /loki/api/v1/push``, JSON).

Loki indexes labels, so each stream is labelled by ``service``, ``level`` and ``host`` only
(a handful of values each); everything else (logger, pid, seq, source, the structured
``fields``) travels as structured metadata on the entry, which Loki keeps without indexing.
Ingestion never waits for Loki: :meth:`LokiForwarder.offer` appends to a bounded queue and a
background task ships batches, retrying 429/5xx/connection errors with exponential backoff.
When the queue is full the oldest records are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LokiForwarder", "push_payload", "push_url"]

log = logging.getLogger(__name__)

PUSH_PATH = "/loki/api/v1/push"
_BAD_KEY = re.compile(r"[^A-Za-z0-9_]")


def push_url(url: str) -> str:
    """Accept a base URL (``http://loki:3100``) or the full push URL."""
    url = url.strip().rstrip("/")
    if not urlsplit(url).path:
        return url + PUSH_PATH
    return url


def _meta_key(key: str) -> str:
    key = _BAD_KEY.sub("_", key) or "_"
    return key if not key[0].isdigit() else f"_{key}"


def _meta_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def entry(record: dict[str, Any]) -> list[Any]:
    """``[ns timestamp, line, structured metadata]`` of one record."""
    meta: dict[str, str] = {}
    for key in ("logger", "pid", "seq", "source", "topic"):
        value = record.get(key)
        if value not in (None, "") and (value != 0 or key == "seq"):
            meta[key] = _meta_value(value)
    fields = record.get("fields")
    if isinstance(fields, dict):
        for key, value in fields.items():
            meta.setdefault(_meta_key(str(key)), _meta_value(value))
    ts_ns = int(float(record.get("ts") or time.time()) * 1_000_000_000)
    return [str(ts_ns), str(record.get("msg", "")), meta]


def push_payload(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The JSON push body: one stream per (service, level, host), entries in time order."""
    streams: dict[tuple[str, str, str], list[list[Any]]] = {}
    for rec in records:
        key = (
            str(rec.get("service") or "unknown"),
            str(rec.get("level") or "info"),
            str(rec.get("host") or "unknown"),
        )
        streams.setdefault(key, []).append(entry(rec))
    return {
        "streams": [
            {
                "stream": {"service": service, "level": level, "host": host},
                "values": sorted(values, key=lambda v: int(v[0])),
            }
            for (service, level, host), values in streams.items()
        ]
    }


class LokiForwarder:
    """Bounded queue + background shipper. ``start()``, ``offer(records)``, ``stop()``."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 1000,
        batch_wait: float = 1.0,
        max_queue: int = 50_000,
        timeout: float = 5.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retries: int = 10,
        tenant: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = push_url(url)
        self.batch_size = max(1, batch_size)
        self.batch_wait = batch_wait
        self.max_queue = max(1, max_queue)
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_retries = max_retries
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._oldest = 0.0
        self.sent = 0
        self.batches = 0
        self.retries = 0
        self.dropped = 0  # queue overflow
        self.failed = 0  # given up after retries, or rejected by Loki (4xx)
        self.last_error = ""

    # --- producer side: never blocks --------------------------------------------------

    def offer(self, records: list[dict[str, Any]]) -> None:
        """Queue records for Loki (O(n), never blocks); overflow drops the oldest."""
        if not records:
            return
        if not self._queue:
            self._oldest = time.monotonic()
        self._queue.extend(records)
        overflow = len(self._queue) - self.max_queue
        if overflow > 0:
            self.dropped += overflow
            for _ in range(overflow):
                self._queue.popleft()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def counters(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "queued": self.queued,
            "sent": self.sent,
            "batches": self.batches,
            "retries": self.retries,
            "dropped": self.dropped,
            "failed": self.failed,
            "last_error": self.last_error,
        }

    # --- shipping ---------------------------------------------------------------------

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._task = asyncio.create_task(self._run(), name="logger.loki")

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Ship what is queued (bounded by ``drain_timeout``), then close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    while self._queue:
                        if await self._push_once(self._take()) is None:
                            break  # Loki unreachable: do not wait out the grace period
            await self._session.close()
            self._session = None

    def _take(self) -> list[dict[str, Any]]:
        n = min(self.batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(n)]
        if self._queue:
            self._oldest = time.monotonic()
        return batch

    async def _run(self) -> None:
        while True:
            if len(self._queue) < self.batch_size:
                wait = self.batch_wait
                if self._queue:
                    wait = max(0.0, self._oldest + self.batch_wait - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                if not self._queue:
                    continue
                if (
                    len(self._queue) < self.batch_size
                    and time.monotonic() - self._oldest < self.batch_wait
                ):
                    continue
            await self._ship(self._take())

    async def _ship(self, batch: list[dict[str, Any]]) -> None:
        backoff = self.min_backoff
        for attempt in range(self.max_retries + 1):
            result = await self._push_once(batch)
            if result is not None:
                return
            if attempt == self.max_retries:
                break
            self.retries += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        self.failed += len(batch)
        log.warning("loki: giving up on %d records: %s", len(batch), self.last_error)

    async def _push_once(self, batch: list[dict[str, Any]]) -> bool | None:
        """True: delivered; False: rejected for good (dropped); None: retry later."""
        import aiohttp

        body = json.dumps(push_payload(batch), separators=(",", ":"), default=str).encode()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                if 200 <= resp.status < 300:
                    self.sent += len(batch)
                    self.batches += 1
                    return True
                text = (await resp.text())[:200]
                self.last_error = f"HTTP {resp.status}: {text.strip()}"
                if resp.status == 429 or resp.status >= 500:
                    return None
                self.failed += len(batch)
                log.warning("loki rejected %d records: %s", len(batch), self.last_error)
                return False
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
