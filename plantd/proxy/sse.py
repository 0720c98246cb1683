"""Server-Sent Events: open a stream, send events with ids, keep idle connections alive.

An event is ``id: N``, ``event: NAME``, ``data: JSON`` and a blank line. The ``id`` is what
a reconnecting browser (or any client) sends back as ``Last-Event-ID``: a state revision or a
log record id, so a stream resumes exactly after the last event it delivered.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from plantd.proxy.problems import Problem

__all__ = ["EventStream", "last_event_id"]

#: an idle stream sends a comment this often, so proxies and browsers keep it open
KEEPALIVE_SECONDS = 15.0


def last_event_id(http: web.Request, fallback: int | None) -> int | None:
    """The ``Last-Event-ID`` header as an integer (a resume point), else ``fallback``."""
    raw = http.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return fallback
    try:
        value = int(raw.strip())
    except ValueError:
        raise Problem(
            400,
            "invalid_argument",
            f"header 'Last-Event-ID': expected an integer, got {raw[:40]!r}",
            field="Last-Event-ID",
        ) from None
    if value < 0:
        raise Problem(
            400, "invalid_argument", "header 'Last-Event-ID': must be >= 0", field="Last-Event-ID"
        )
    return value


class EventStream:
    """One SSE response; :meth:`send` an event, :meth:`comment` to keep it alive."""

    def __init__(self, http: web.Request) -> None:
        self.http = http
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        self.sent = 0

    async def open(self) -> EventStream:
        await self.response.prepare(self.http)
        return self

    async def send(self, data: Any, *, event: str | None = None, id: int | None = None) -> None:
        lines = []
        if id is not None:
            lines.append(f"id: {id}")
        if event:
            lines.append(f"event: {event}")
        lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
        await self.response.write(("\n".join(lines) + "\n\n").encode())
        self.sent += 1

    async def comment(self, text: str = "keepalive") -> None:
        await self.response.write(f": {text}\n\n".encode())
