"""A deterministic in-memory `DataSource` for snapshot and pilot tests (no sockets)."""

from __future__ import annotations

import asyncio
import fnmatch
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

from plantd.tui.source import (
    BrokerInfo,
    BrokerReach,
    Conflict,
    Disconnected,
    Identity,
    KeyChange,
    KeyEntry,
    KeyPage,
    LogRecord,
    ReplyPart,
    ScopePage,
    ServiceError,
    ServiceInfo,
    StateChange,
    WorkerInfo,
    follow_pages,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: the frozen clock of every test


def plant_services() -> list[ServiceInfo]:
    return [
        ServiceInfo("org.plantd.Logger", workers=1, queue=0, rate=3.0),
        ServiceInfo("org.plantd.State", workers=1, queue=0, rate=12.5),
        ServiceInfo("org.plantd.module.Echo", workers=2, queue=3, rate=120.0),
        ServiceInfo("org.plantd.module.Pump", workers=0, queue=2, rate=0.0),
    ]


def plant_workers() -> list[WorkerInfo]:
    return [
        WorkerInfo("a1b2c3d4", "org.plantd.Logger", 0.4, "idle"),
        WorkerInfo("5e6f7a8b", "org.plantd.State", 1.1, "busy"),
        WorkerInfo("9c0d1e2f", "org.plantd.module.Echo", 4.2, "idle"),
        WorkerInfo("3a4b5c6d", "org.plantd.module.Echo", 9.0, "idle"),
    ]


def plant_state() -> dict[str, dict[str, KeyEntry]]:
    def entry(key: str, value: Any, rev: int) -> KeyEntry:
        return KeyEntry(key, value, rev, rev - 1 if rev > 1 else rev, 1, "2023-11-14T22:10:00Z")

    return {
        "org.plantd.line1": {
            "mode": entry("mode", "auto", 41),
            "setpoint": entry("setpoint", 12.5, 42),
            "enabled": entry("enabled", True, 17),
            "limits": entry("limits", {"lo": 0, "hi": 100}, 12),
        },
        "org.plantd.line2": {"mode": entry("mode", "manual", 7)},
        "site": {"name": entry("name", "plant-a", 3)},
    }


def big_scope(count: int) -> dict[str, KeyEntry]:
    """`count` tags like a real plant's: `tag.000000` ... with small JSON values."""
    return {
        f"tag.{i:06d}": KeyEntry(
            f"tag.{i:06d}", {"v": i, "units": "degC"}, 1000 + i, 1000 + i, 1, "2023-11-14T22:10:00Z"
        )
        for i in range(count)
    }


def many_workers(count: int, services: int = 50) -> list[WorkerInfo]:
    """`count` healthy workers spread over `services` services, plus the usual problems."""
    return [
        *plant_workers(),
        *(
            WorkerInfo(f"w{i:05d}", f"org.plantd.module.M{i % services:03d}", 0.5, "idle")
            for i in range(count)
        ),
    ]


PAGE_DEFAULT = 1000  # the state service's and the broker's default page size
PAGE_MAX = 10_000  # the state service's maximum `limit`


def page_slice(names: list[str], after: str | None, limit: int) -> tuple[int, int]:
    """[start, end) of the page of sorted `names` strictly after `after`."""
    start = 0 if after is None else bisect_right(names, after)
    return start, min(len(names), start + limit)


LEVEL_CYCLE = ("info", "info", "debug", "warning", "info", "error")
SERVICES_CYCLE = ("org.plantd.State", "org.plantd.module.Echo", "org.plantd.broker")


def plant_logs(count: int = 30) -> list[LogRecord]:
    out = []
    for i in range(count):
        service = SERVICES_CYCLE[i % 3]
        seq = i // 3 + (3 if i >= 15 and service == "org.plantd.module.Echo" else 0)
        out.append(
            LogRecord(
                ts=T0 - 60 + i * 0.25,
                level=LEVEL_CYCLE[i % len(LEVEL_CYCLE)],
                service=service,
                msg=f"event {i}: " + ("request handled" if i % 2 else "heartbeat ok"),
                host="plant-a",
                pid=100 + i % 3,
                logger="plantd",
                fields={"n": i} if i % 4 == 0 else {},
                seq=seq,
            )
        )
    return out


class FakeSource:
    """In-memory plant: CAS semantics like the state service, queues for the buses."""

    def __init__(self, *, connected: bool = True, logs: list[LogRecord] | None = None) -> None:
        self.endpoint = "tcp://127.0.0.1:9797"
        self.connected = connected
        #: what brokers() answers: one broker unless a test gives several
        self.reach: list[BrokerReach] = []
        self.service_list = plant_services()
        self.worker_list = plant_workers()
        self.broker = BrokerInfo(heartbeat_interval=2.5, liveness=3)
        self.state = plant_state()
        self.revision = 100
        self.initial_logs = plant_logs() if logs is None else logs
        self.history_logs: list[LogRecord] = []
        self.writes: list[tuple[Any, ...]] = []
        self.calls: list[tuple[str, str, bytes]] = []
        self.replies: dict[tuple[str, str], list[list[bytes]]] = {}
        self.concurrent_write: tuple[str, str, Any] | None = None  # applied before next set
        self._state_q: asyncio.Queue[StateChange] | None = None
        self._log_q: asyncio.Queue[LogRecord] | None = None
        self.key_requests: list[dict[str, Any]] = []  # every list-keys request, as sent
        self.scope_requests: list[dict[str, Any]] = []
        self.worker_requests = 0
        self.byte_cut: int | None = None  # cut every data page to this many keys (reply bytes)
        self.key_error: ServiceError | None = None  # raised once by the next list-keys
        self._sorted: dict[str, tuple[tuple[int, int], list[str]]] = {}
        self.identity: Identity | None = None  # None: no org.plantd.Identity service
        self.audit: dict[tuple[str, str], list[KeyChange]] = {}  # what key_history returns
        self.history_requests: list[tuple[str, str]] = []
        self.refuse_writes: str = ""  # the state service's "not authorized: ..." for writes

    def _check(self) -> None:
        if not self.connected:
            raise Disconnected("broker unreachable at tcp://127.0.0.1:9797: Connection refused")

    # broker
    async def services(self) -> list[ServiceInfo]:
        self._check()
        return list(self.service_list)

    async def workers(self) -> list[WorkerInfo]:
        """Every page of `mmi.workers` (1,000 a page), followed like `LiveSource` does."""
        self._check()
        ordered = sorted(self.worker_list, key=lambda w: (w.service, w.identity))

        async def fetch(cursor: Any) -> tuple[Any, bool, Any]:
            self.worker_requests += 1
            await asyncio.sleep(0)
            start = cursor or 0
            end = min(len(ordered), start + PAGE_DEFAULT)
            more = end < len(ordered)
            return ordered[start:end], more, end if more else None

        return [w for page in await follow_pages(fetch) for w in page]

    async def broker_info(self) -> BrokerInfo:
        self._check()
        return self.broker

    async def ping(self) -> float:
        self._check()
        return 0.0012

    def brokers(self) -> list[BrokerReach]:
        return self.reach or [BrokerReach(self.endpoint, "up" if self.connected else "down", True)]

    # state: pages per the paging contract (by name, `after` exclusive, limit <= 10,000)
    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return PAGE_DEFAULT
        if not 1 <= limit <= PAGE_MAX:
            raise ServiceError(f"limit: must be 1..{PAGE_MAX}", "invalid_argument")
        return limit

    def _names(self, scope: str, glob: str) -> list[str]:
        """Sorted key names of a scope (cached while the scope is unchanged)."""
        keys = self.state[scope]
        stamp = (id(keys), len(keys))
        cached = self._sorted.get(scope)
        if cached is None or cached[0] != stamp:
            cached = (stamp, sorted(keys))
            self._sorted[scope] = cached
        names = cached[1]
        return fnmatch.filter(names, glob) if glob else names

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> ScopePage:
        self._check()
        self.scope_requests.append({"prefix": prefix, "after": after, "limit": limit})
        await asyncio.sleep(0)
        names = sorted(s for s in self.state if s.startswith(prefix))
        start, end = page_slice(names, after, self._limit(limit))
        more = end < len(names)
        return ScopePage(names[start:end], len(names), more, names[end - 1] if more else None)

    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        after: str | None = None,
        limit: int | None = None,
        values: bool = True,
    ) -> KeyPage:
        self._check()
        self.key_requests.append(
            {"scope": scope, "prefix": prefix, "glob": glob, "after": after, "limit": limit}
        )
        await asyncio.sleep(0)  # a reply takes a turn of the event loop, like a socket
        if self.key_error is not None:
            error, self.key_error = self.key_error, None
            raise error
        if scope not in self.state:
            raise ServiceError(f"no scope {scope}", "not_found")
        page_size = self._limit(limit)
        if values and self.byte_cut is not None:
            page_size = min(page_size, self.byte_cut)
        names = self._names(scope, glob)
        lo = bisect_left(names, prefix)
        hi = bisect_left(names, prefix + "\U0010ffff") if prefix else len(names)
        names = names[lo:hi]
        start, end = page_slice(names, after, page_size)
        keys = self.state[scope]
        entries = [keys[n] for n in names[start:end]]
        if not values:
            entries = [KeyEntry(e.key, None, e.mod_revision, e.create_revision) for e in entries]
        more = end < len(names)
        total = None if glob else len(names)  # the service counts no glob (a full scan)
        return KeyPage(entries, total, more, names[end - 1] if more else None)

    async def get_key(self, scope: str, key: str) -> KeyEntry | None:
        self._check()
        return self.state.get(scope, {}).get(key)

    def _bump(self, scope: str, key: str, value: Any) -> int:
        self.revision += 1
        old = self.state[scope].get(key)
        if old is None:
            self._sorted.pop(scope, None)  # a new name: the sorted names change
        self.state[scope][key] = KeyEntry(
            key,
            value,
            self.revision,
            old.create_revision if old else self.revision,
            (old.version + 1) if old else 1,
            "2023-11-14T22:13:20Z",
        )
        return self.revision

    async def set_key(
        self, scope: str, key: str, value: Any, prev_revision: int | None = None
    ) -> int:
        self._check()
        if self.refuse_writes:
            raise ServiceError(self.refuse_writes, "unauthorized")
        if self.concurrent_write is not None:
            self._bump(*self.concurrent_write)
            self.concurrent_write = None
        self.writes.append(("set", scope, key, value, prev_revision))
        old = self.state.setdefault(scope, {}).get(key)
        if prev_revision is not None and (old.mod_revision if old else 0) != prev_revision:
            raise Conflict("revision mismatch", old.mod_revision if old else 0)
        return self._bump(scope, key, value)

    async def delete_key(self, scope: str, key: str, prev_revision: int | None = None) -> None:
        self._check()
        self.writes.append(("delete", scope, key, prev_revision))
        old = self.state.get(scope, {}).get(key)
        if old is None:
            raise ServiceError(f"no key {key}", "not_found")
        if prev_revision is not None and old.mod_revision != prev_revision:
            raise Conflict("revision mismatch", old.mod_revision)
        del self.state[scope][key]
        self._sorted.pop(scope, None)

    async def create_scope(self, scope: str) -> None:
        self._check()
        self.writes.append(("create-scope", scope))
        self.state.setdefault(scope, {})

    async def delete_scope(self, scope: str) -> None:
        self._check()
        self.writes.append(("delete-scope", scope))
        self.state.pop(scope, None)

    # call
    async def call(self, service: str, operation: str, body: bytes) -> AsyncIterator[ReplyPart]:
        self._check()
        self.calls.append((service, operation, body))
        parts = self.replies.get((service, operation)) or [[body]]
        for index, frames in enumerate(parts, 1):
            await asyncio.sleep(0)
            yield ReplyPart(tuple(frames), index)

    # buses
    def push_state(self, change: StateChange) -> None:
        assert self._state_q is not None, "state bus not subscribed yet"
        self._state_q.put_nowait(change)

    def publish_write(
        self, scope: str, key: str, value: Any = None, *, delete: bool = False
    ) -> int:
        """Someone else writes (like `plant state set`): stored, then announced on the bus."""
        if delete:
            del self.state[scope][key]
            self._sorted.pop(scope, None)
            self.revision += 1
            self.push_state(StateChange(scope, key, "delete", None, self.revision, ""))
            return self.revision
        revision = self._bump(scope, key, value)
        self.push_state(StateChange(scope, key, "set", value, revision, ""))
        return revision

    def push_log(self, rec: LogRecord) -> None:
        assert self._log_q is not None, "log bus not subscribed yet"
        self._log_q.put_nowait(rec)

    async def state_changes(self) -> AsyncIterator[StateChange]:
        self._state_q = asyncio.Queue()
        while True:
            yield await self._state_q.get()

    async def log_records(self) -> AsyncIterator[LogRecord]:
        self._log_q = asyncio.Queue()
        for rec in self.initial_logs:
            yield rec
        while True:
            yield await self._log_q.get()

    async def query_logs(self, limit: int = 500) -> list[LogRecord]:
        self._check()
        return self.history_logs[-limit:]

    # identity
    async def whoami(self) -> Identity | None:
        self._check()
        return self.identity

    async def key_history(self, scope: str, key: str) -> list[KeyChange]:
        self._check()
        self.history_requests.append((scope, key))
        return list(self.audit.get((scope, key), []))

    async def close(self) -> None:
        return None


def make_app(source: FakeSource | None = None, **kwargs: Any) -> Any:
    """A PlantApp with a frozen clock, UTC, no animations and one poll per hour (deterministic)."""
    from plantd.tui.app import PlantApp

    kwargs.setdefault("poll_interval", 3600.0)
    return PlantApp(
        source or FakeSource(),
        clock=lambda: T0,
        monotonic=lambda: 1000.0,
        tz=UTC,
        animations=False,
        **kwargs,
    )
