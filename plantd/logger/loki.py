"""Forward the logger's stored records to Grafana Loki's push API (``POST /loki/api/v1/push``).

The logger's own SQLite table is the queue: the forwarder reads records in id (arrival) order
after a durable cursor (``cursors`` table, one row per push URL) and moves the cursor only
when Loki has answered the batch for good: 2xx (all kept), 400 (Loki kept the valid entries
and named the invalid ones) or 413 (too large). Any other answer (429, 5xx, 401/403/404) and
connection errors are retried with exponential
backoff for as long as it takes, so a restart, a crash or a long outage resumes where it
stopped and nothing stored is lost on the way (at least once: a crash between Loki's answer
and the cursor write sends that batch again, which Loki deduplicates). Only retention can
delete a record before it is sent; those are counted as ``expired``.

Loki's 400 names each rejected entry (Loki 3: ``N errors like: MESSAGE`` groups joined by
``"; "``; Loki 2: one ``entry ... ignored`` line each): :func:`rejected_count` turns it into
an exact per-record count. Structured metadata (``auto``/``on``/``off``): ``auto`` asks
``/loki/api/v1/status/buildinfo`` for the version (before 2.9 Loki accepts metadata and
silently drops it) and falls back to the line when Loki refuses metadata in a push
(``allow_structured_metadata: false``), re-sending only the entries it refused. Without
metadata the line is a JSON object ``{"msg": ..., "logger": ..., ...fields}`` (UTF-8).

The forwarder's own complaints are logged at most once per ``report_interval`` and are kept
off the log bus (``extra={"bus": False}``): a warning about rejected records must not itself
be forwarded and rejected, forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from plantd.protocol import jsoncodec

if TYPE_CHECKING:
    from plantd.logger.store import LogStore

__all__ = [
    "LokiForwarder",
    "MetadataMode",
    "entry",
    "push_payload",
    "push_url",
    "rejected_count",
]

log = logging.getLogger(__name__)

PUSH_PATH = "/loki/api/v1/push"
BUILDINFO_PATH = "/loki/api/v1/status/buildinfo"
_BAD_KEY = re.compile(r"[^A-Za-z0-9_]")
_GROUP = re.compile(r"(?:^|; )(\d+) errors like: ")
_LOKI2_ENTRY = re.compile(r"^entry with timestamp .* ignored, reason: ", re.MULTILINE)
_LOKI2_TOTAL = re.compile(r"total ignored: (\d+) out of (\d+)")
#: Loki's answer when structured metadata is disallowed for the tenant
_METADATA_REFUSED = "includes structured metadata, but this feature is disallowed"

MetadataMode = Literal["auto", "on", "off"]
_RECORD_META = ("logger", "pid", "seq", "source", "topic")


def push_url(url: str) -> str:
    """Accept a base URL (``http://loki:3100``) or the full push URL."""
    url = url.strip().rstrip("/")
    if not urlsplit(url).path:
        return url + PUSH_PATH
    return url


def _buildinfo_url(push: str) -> str:
    parts = urlsplit(push)
    path = parts.path[: -len(PUSH_PATH)] if parts.path.endswith(PUSH_PATH) else ""
    return urlunsplit((parts.scheme, parts.netloc, path + BUILDINFO_PATH, "", ""))


def _meta_key(key: str) -> str:
    key = _BAD_KEY.sub("_", key) or "_"
    return key if not key[0].isdigit() else f"_{key}"


def _meta_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return jsoncodec.dumps(value, default=str).decode()


def _record_meta(record: dict[str, Any]) -> dict[str, Any]:
    """The record's own keys worth keeping besides the message (logger, pid, seq, ...)."""
    meta: dict[str, Any] = {}
    for key in _RECORD_META:
        value = record.get(key)
        if value not in (None, "") and (value != 0 or key == "seq"):
            meta[key] = value
    return meta


def entry(record: dict[str, Any], metadata: bool = True) -> list[Any]:
    """``[ns timestamp, line, structured metadata]`` of one record; without ``metadata`` the
    line is a JSON object carrying the message, the record's keys and its fields."""
    ts_ns = int(float(record.get("ts") or time.time()) * 1_000_000_000)
    fields = record.get("fields")
    fields = fields if isinstance(fields, dict) else {}
    msg = str(record.get("msg", ""))
    if not metadata:
        doc: dict[str, Any] = {"msg": msg, **_record_meta(record)}
        for key, value in fields.items():
            doc.setdefault(str(key), value)
        if len(doc) == 1:
            return [str(ts_ns), msg]
        return [str(ts_ns), jsoncodec.dumps(doc, default=str).decode()]
    meta = {key: _meta_value(value) for key, value in _record_meta(record).items()}
    for key, value in fields.items():
        meta.setdefault(_meta_key(str(key)), _meta_value(value))
    return [str(ts_ns), msg, meta]


def push_payload(records: Iterable[dict[str, Any]], metadata: bool = True) -> dict[str, Any]:
    """The JSON push body: one stream per (service, level, host), entries in time order."""
    streams: dict[tuple[str, str, str], list[list[Any]]] = {}
    for rec in records:
        key = (
            str(rec.get("service") or "unknown"),
            str(rec.get("level") or "info"),
            str(rec.get("host") or "unknown"),
        )
        streams.setdefault(key, []).append(entry(rec, metadata))
    return {
        "streams": [
            {
                "stream": {"service": service, "level": level, "host": host},
                "values": sorted(values, key=lambda v: int(v[0])),
            }
            for (service, level, host), values in streams.items()
        ]
    }


def rejected_count(body: str, sent: int) -> int:
    """How many of the ``sent`` entries a Loki 400 answer rejected (all of them when the
    answer names none: a malformed push is rejected whole)."""
    groups = _GROUP.findall(body)
    if groups:
        return min(sent, sum(int(n) for n in groups))
    total = _LOKI2_TOTAL.findall(body)
    if total:
        return min(sent, sum(int(n) for n, _ in total))
    lines = len(_LOKI2_ENTRY.findall(body))
    if lines:
        return min(sent, lines)
    if re.search(r"^(entry for stream|stream '|Max entry size)", body.strip()):
        return min(sent, 1)  # Loki 3, one invalid entry: its message alone
    return sent


def _version_supports_metadata(version: str) -> bool:
    """Loki keeps structured metadata from 2.9 on (earlier versions drop it silently)."""
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if match is None:
        return True  # a development build: assume current
    return (int(match[1]), int(match[2])) >= (2, 9)


class LokiForwarder:
    """Reads ``store`` after its durable cursor and pushes to Loki. ``start()``/``stop()``."""

    def __init__(
        self,
        store: LogStore,
        url: str,
        *,
        batch_size: int = 1000,
        batch_wait: float = 1.0,
        timeout: float = 5.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        tenant: str | None = None,
        metadata: MetadataMode = "auto",
        report_interval: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if metadata not in ("auto", "on", "off"):
            raise ValueError(f"loki_metadata: expected auto, on or off, got {metadata!r}")
        self.store = store
        self.url = push_url(url)
        self.cursor_name = f"loki {self.url}"
        self.batch_size = max(1, batch_size)
        self.batch_wait = batch_wait
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.metadata_mode: MetadataMode = metadata
        #: whether entries carry structured metadata now (``auto`` may turn it off)
        self.use_metadata = metadata != "off"
        self.report_interval = report_interval
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self.cursor = 0
        self.top_id = 0
        self.sent = 0  # records Loki accepted
        self.rejected = 0  # records Loki refused for good (counted from its 400 answers)
        self.expired = 0  # records retention deleted before they were sent
        self.pushes = 0  # push requests Loki answered for good
        self.retries = 0  # push attempts retried (429, 5xx, connection errors)
        self.last_error = ""
        self._unreported = 0
        self._reported_at = 0.0

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        import aiohttp

        self.cursor = await self.store.cursor(self.cursor_name, self.store.opened_at_id)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.store.on_commit.append(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="logger.loki")

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Ship what is stored (bounded by ``drain_timeout``, not waiting on an outage), then
        close. Whatever is not acknowledged by then stays after the cursor for next time."""
        self._stopping = True
        self._wake.set()
        if self.store.on_commit.count(self._wake.set):
            self.store.on_commit.remove(self._wake.set)
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- state ------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Stored records not yet acknowledged by Loki (ids after the cursor: retention may
        have deleted some of them since)."""
        return max(0, max(self.top_id, self.store.last_id) - self.cursor)

    def counters(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "metadata": self.metadata_mode,
            "structured_metadata": self.use_metadata,
            "cursor": self.cursor,
            "backlog": self.backlog,
            "sent": self.sent,
            "rejected": self.rejected,
            "expired": self.expired,
            "pushes": self.pushes,
            "retries": self.retries,
            "last_error": self.last_error,
        }

    def status(self) -> str:
        """``warn`` while the last push failed or was partly rejected; ``pass`` once a push
        went through whole again."""
        return "warn" if self.last_error else "pass"

    # --- shipping ---------------------------------------------------------------------

    async def _run(self) -> None:
        if self.metadata_mode == "auto":
            await self._probe_version()
        while True:
            self._wake.clear()  # before reading: a commit from now on wakes the wait below
            records, self.top_id = await self.store.records_after(self.cursor, self.batch_size)
            if not records:
                if self.top_id < self.cursor:
                    # the table was emptied and ids start again: everything there is new
                    self.cursor = 0
                    continue
                if self._stopping:
                    return
                await self._wake.wait()
                continue
            if len(records) < self.batch_size and not self._stopping:
                age = time.time() - float(records[0].get("received") or 0)
                if age < self.batch_wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.batch_wait - age)
                    if len(records) < self.batch_size and not self._stopping:
                        # more may have arrived meanwhile: read again, up to a full batch
                        records, self.top_id = await self.store.records_after(
                            self.cursor, self.batch_size
                        )
            first = int(records[0]["id"])
            if first > self.cursor + 1:
                self.expired += first - self.cursor - 1
            if not await self._deliver(records):
                return  # stopping while Loki is unreachable: resume from the cursor next time
            self.cursor = int(records[-1]["id"])
            await self.store.set_cursor(self.cursor_name, self.cursor)
            self._report()

    async def _deliver(self, records: list[dict[str, Any]]) -> bool:
        """Push until Loki answers for good (True), or stop during an outage (False)."""
        backoff = self.min_backoff
        pending = records
        while True:
            metadata = self.use_metadata
            answer = await self._push_once(pending, metadata)
            if answer is None:
                if self._stopping:
                    return False
                self.retries += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            status, body = answer
            if status < 300:
                self.sent += len(pending)
                self.pushes += 1
                self.last_error = ""
                return True
            self.pushes += 1
            with_meta = [r for r in pending if metadata and entry(r)[2]]
            if (
                status == 400
                and metadata
                and self.metadata_mode == "auto"
                and _METADATA_REFUSED in body
                and with_meta
            ):
                # every entry with metadata failed (refused, or invalid for another reason:
                # Loki names one error per entry); beyond those, the errors are entries
                # without metadata, rejected for good. The rest Loki kept. Resend the
                # entries with metadata in the line (the invalid ones are counted then).
                invalid_plain = max(0, rejected_count(body, len(pending)) - len(with_meta))
                self._fall_back("Loki refuses structured metadata")
                self.rejected += invalid_plain
                self._unreported += invalid_plain
                self.sent += len(pending) - len(with_meta) - invalid_plain
                pending = with_meta
                continue
            rejected = rejected_count(body, len(pending)) if status == 400 else len(pending)  # 413
            self.rejected += rejected
            self.sent += len(pending) - rejected
            self._unreported += rejected
            self.last_error = f"HTTP {status}: {body.strip()[:300]}"
            return True

    async def _push_once(
        self, records: list[dict[str, Any]], metadata: bool
    ) -> tuple[int, str] | None:
        """Loki's (status, body) for a final answer; None: retry later (429, 5xx, no answer)."""
        import aiohttp

        body = jsoncodec.dumps(push_payload(records, metadata), default=str)
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                text = "" if resp.status < 300 else await resp.text(errors="replace")
                if resp.status >= 300 and resp.status not in (400, 413):
                    # 429, 5xx, and also 401/403/404 (a proxy or credentials to fix): the
                    # records wait in the store rather than being thrown away
                    self.last_error = f"HTTP {resp.status}: {text.strip()[:300]}"
                    return None
                return resp.status, text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    async def _probe_version(self) -> None:
        """``auto``: a Loki older than 2.9 drops structured metadata silently, so do not
        send it there. An unanswered probe keeps metadata on (refusals are still caught)."""
        import aiohttp

        try:
            url = _buildinfo_url(self.url)
            async with self._session.get(url, headers=self.headers) as resp:
                if resp.status != 200:
                    return
                version = str((await resp.json(content_type=None)).get("version", ""))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, AttributeError):
            return
        if version and not _version_supports_metadata(version):
            self._fall_back(f"Loki {version} drops structured metadata")

    def _fall_back(self, why: str) -> None:
        if self.use_metadata:
            self.use_metadata = False
            log.warning(
                "loki: %s: record fields now go in the line as JSON", why, extra={"bus": False}
            )

    def _report(self) -> None:
        """One warning per ``report_interval`` at most about rejected records, off the bus."""
        now = time.monotonic()
        if self._unreported and now - self._reported_at >= self.report_interval:
            log.warning(
                "loki rejected %d records (%d in all): %s",
                self._unreported,
                self.rejected,
                self.last_error,
                extra={"bus": False},
            )
            self._unreported = 0
            self._reported_at = now
