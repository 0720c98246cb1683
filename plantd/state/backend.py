"""The storage interface the state service sees, and the choice of its implementation.

Two backends implement :class:`StateBackend`: ``sqlite`` (plantd.state.store.StateStore,
one file, the default) and ``etcd`` (plantd.state.etcd.store.EtcdStore, a cluster several
daemons share), chosen by the daemon setting ``backend``. The service (plantd.state.service)
only uses what is declared here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Protocol

from plantd.state.audit import AuditContext
from plantd.state.history import Event, Listener
from plantd.state.settings import StateSettings
from plantd.state.validation import Limits

__all__ = ["BACKENDS", "StateBackend", "open_backend"]

BACKENDS = ("sqlite", "etcd")


class StateBackend(Protocol):
    """What the state service and daemon need from a store."""

    limits: Limits
    #: True: a write given ``audit`` commits its audit rows with it (SQLite); False: the
    #: service records the rows itself after the write (etcd)
    audits_in_transaction: bool
    revision: int
    compact_revision: int
    commits: int
    ops_applied: int

    @property
    def queue_depth(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    def add_listener(self, callback: Listener) -> None: ...
    def remove_listener(self, callback: Listener) -> None: ...

    async def create_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]: ...
    async def delete_scope(
        self, scope: str, *, request_id: str | None = None, audit: AuditContext | None = None
    ) -> dict[str, Any]: ...
    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        prev_revision: int | None = None,
        if_absent: bool = False,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]: ...
    async def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]: ...
    async def txn(
        self,
        ops: Iterable[dict[str, Any]],
        *,
        request_id: str | None = None,
        audit: AuditContext | None = None,
        default_scope: str | None = None,
    ) -> dict[str, Any]: ...
    async def import_json(
        self,
        doc: dict[str, Any],
        *,
        replace: bool = False,
        request_id: str | None = None,
        audit: AuditContext | None = None,
    ) -> dict[str, Any]: ...

    async def get(self, scope: str, key: str) -> dict[str, Any]: ...
    async def scope_exists(self, scope: str) -> bool: ...
    async def list_scopes(self) -> list[dict[str, Any]]: ...
    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]: ...
    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str | None = None,
        after: str | None = None,
        limit: int = 1000,
        include_values: bool = True,
        max_bytes: int = 768 * 1024,
    ) -> dict[str, Any]: ...
    async def export_page(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> dict[str, Any]: ...
    def export_pages(
        self,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
        max_bytes: int = 768 * 1024,
    ) -> AsyncIterator[dict[str, Any]]: ...
    async def changes_since(self, revision: int, *, limit: int | None = None) -> list[Event]: ...
    async def current_revision(self) -> int:
        """A revision every committed change is at or below, from which a watch may start
        (``watch {}``); exact now, not a cached value another daemon's writes made stale."""
        ...

    async def health(self) -> dict[str, Any]: ...
    def status(self) -> tuple[str, str | None]:
        """``(pass|warn|fail, reason)`` for /healthz."""
        ...

    async def backup(
        self, dest: str | os.PathLike[str], *, overwrite: bool = False
    ) -> dict[str, Any]: ...
    async def close(self) -> None: ...


async def open_backend(settings: StateSettings, path: Path) -> StateBackend:
    """Open the store ``settings.backend`` names (``path``: the SQLite file)."""
    s = settings
    limits = Limits(max_value_bytes=s.max_value_bytes, max_txn_ops=s.max_txn_ops)
    if s.backend == "sqlite":
        from plantd.state.store import StateStore

        return await StateStore.open(
            path,
            limits=limits,
            history_size=s.history_size,
            request_history=s.request_history,
            batch_max=s.batch_max,
            reap_interval=s.reap_interval,
            cache_bytes=s.cache_mib << 20,
        )
    if s.backend == "etcd":
        from plantd.state.etcd.store import EtcdStore

        return await EtcdStore.open(
            s.etcd_endpoints,
            prefix=s.etcd_prefix,
            limits=limits,
            history_size=s.history_size,
            max_txn_ops=s.etcd_max_txn_ops,
            timeout=s.etcd_timeout,
            publisher_ttl=s.etcd_publisher_ttl,
        )
    raise ValueError(
        f"PLANTD_STATE_BACKEND must be one of {', '.join(BACKENDS)}, got {s.backend!r}"
    )
