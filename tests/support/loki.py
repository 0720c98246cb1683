"""A Loki stand-in: an aiohttp server answering the push API the way Grafana Loki documents.

It validates each entry of a push on its own, keeps the valid ones and answers 400 naming the
invalid ones in the same push (Loki 3.x: the distributor's messages, grouped as
``N errors like: MESSAGE`` joined by ``"; "``), 204 when all were kept. Limits are Loki's
defaults unless given: ``max_line_size`` 256 KiB, 128 structured metadata entries,
``reject_old_samples_max_age`` 7 days, ``creation_grace_period`` 10 minutes. Structured
metadata is ``"allow"`` (3.x), ``"refuse"`` (``allow_structured_metadata: false``) or
``"ignore"`` (Loki before 2.9: accepted and silently dropped); ``version`` is what
``/loki/api/v1/status/buildinfo`` says. ``stop()``/``start()`` again on the same port
simulate an outage; ``status`` forces every push to answer that HTTP status (429, 503...).
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Entry", "LokiStandIn"]

NS = 1_000_000_000


@dataclass(frozen=True)
class Entry:
    """One entry Loki kept."""

    labels: tuple[tuple[str, str], ...]
    ts_ns: int
    line: str
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def stream(self) -> dict[str, str]:
        return dict(self.labels)


def _stream_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def grouped_errors(messages: list[str]) -> str:
    """Loki's ``util.GroupedErrors`` text."""
    counts = Counter(messages)
    parts = []
    for message, n in counts.items():
        prefix = f"{n} errors like: " if len(counts) > 1 or n > 1 else ""
        parts.append(prefix + message)
    return "; ".join(parts)


class LokiStandIn:
    def __init__(
        self,
        *,
        structured_metadata: str = "allow",
        version: str = "3.4.6",
        max_line_size: int = 256 * 1024,
        max_metadata_entries: int = 128,
        max_age: float = 7 * 24 * 3600.0,
        grace: float = 600.0,
    ) -> None:
        assert structured_metadata in ("allow", "refuse", "ignore")
        self.structured_metadata = structured_metadata
        self.version = version
        self.max_line_size = max_line_size
        self.max_metadata_entries = max_metadata_entries
        self.max_age = max_age
        self.grace = grace
        self.status: int | None = None
        self.entries: list[Entry] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.pushes = 0
        self.rejected = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/loki/api/v1/push", self._push)
        app.router.add_get("/loki/api/v1/status/buildinfo", self._buildinfo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LokiStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def lines(self) -> list[str]:
        return [e.line for e in self.entries]

    async def _buildinfo(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": self.version, "revision": "stand-in"})

    async def _push(self, request: web.Request) -> web.Response:
        self.pushes += 1
        if self.status is not None:
            return web.Response(status=self.status, text="stand-in says no\n")
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.bodies.append(raw)
        self.headers.append(dict(request.headers))
        try:
            doc = json.loads(raw.decode("utf-8"))
            streams = doc["streams"]
        except (ValueError, KeyError, TypeError) as exc:
            return web.Response(status=400, text=f"loghttp push: {exc}\n")
        now = time.time()
        errors: list[str] = []
        for stream in streams:
            labels = {str(k): str(v) for k, v in stream["stream"].items()}
            text = _stream_text(labels)
            for value in stream["values"]:
                ts_ns, line = int(value[0]), str(value[1])
                meta = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
                error = self._validate(text, ts_ns, line, meta, now)
                if error:
                    errors.append(error)
                    continue
                if self.structured_metadata == "ignore":
                    meta = {}
                self.entries.append(Entry(tuple(sorted(labels.items())), ts_ns, line, meta))
        if errors:
            self.rejected += len(errors)
            return web.Response(status=400, text=grouped_errors(errors) + "\n")
        return web.Response(status=204)

    def _validate(
        self, stream: str, ts_ns: int, line: str, meta: dict[str, Any], now: float
    ) -> str | None:
        """Loki's distributor checks, in its order, with its messages."""
        ts = ts_ns / NS
        if ts < now - self.max_age:
            oldest = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - self.max_age))
            return (
                f"entry for stream '{stream}' has timestamp too old: "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(ts))}, "
                f"oldest acceptable timestamp is: {oldest}"
            )
        if ts > now + self.grace:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            return f"entry for stream '{stream}' has timestamp too new: {stamp}"
        size = len(line.encode())
        if size > self.max_line_size:
            return (
                f"Max entry size '{self.max_line_size}' bytes exceeded for stream '{stream}' "
                f"while adding an entry with length '{size}' bytes"
            )
        if meta and self.structured_metadata == "refuse":
            return (
                f"stream '{stream}' includes structured metadata, but this feature is "
                "disallowed. Please see `limits_config.allow_structured_metadata` or contact "
                "your Loki administrator to enable it."
            )
        if meta and self.structured_metadata == "allow" and len(meta) > self.max_metadata_entries:
            return (
                f"stream '{stream}' has too many structured metadata labels: '{len(meta)}', "
                f"limit: '{self.max_metadata_entries}'. Please see "
                "`limits_config.max_structured_metadata_entries_count` or contact your Loki "
                "administrator to increase it."
            )
        return None
