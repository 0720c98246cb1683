"""A deterministic in-memory `DataSource` for snapshot and pilot tests (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from plantd.tui.source import (
    BrokerInfo,
    Conflict,
    Disconnected,
    KeyEntry,
    LogRecord,
    ReplyPart,
    ServiceError,
    ServiceInfo,
    StateChange,
    WorkerInfo,
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

    def _check(self) -> None:
        if not self.connected:
            raise Disconnected("broker unreachable at tcp://127.0.0.1:9797: Connection refused")

    # broker
    async def services(self) -> list[ServiceInfo]:
        self._check()
        return list(self.service_list)

    async def workers(self) -> list[WorkerInfo]:
        self._check()
        return list(self.worker_list)

    async def broker_info(self) -> BrokerInfo:
        self._check()
        return self.broker

    async def ping(self) -> float:
        self._check()
        return 0.0012

    # state
    async def list_scopes(self) -> list[str]:
        self._check()
        return sorted(self.state)

    async def list_keys(self, scope: str) -> list[KeyEntry]:
        self._check()
        if scope not in self.state:
            raise ServiceError(f"no scope {scope}", "not_found")
        return list(self.state[scope].values())

    async def get_key(self, scope: str, key: str) -> KeyEntry | None:
        self._check()
        return self.state.get(scope, {}).get(key)

    def _bump(self, scope: str, key: str, value: Any) -> int:
        self.revision += 1
        old = self.state[scope].get(key)
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

    async def close(self) -> None:
        return None
