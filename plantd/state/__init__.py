"""Durable scoped key-value store of the state service (storage layer, no networking).

The store's names load lazily (PEP 562): :mod:`plantd.state.settings` and
:mod:`plantd.state.errors` must not pull in the store or sqlite3, so the CLI's offline
commands can resolve the database path cheaply.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantd.state.errors import (
        Compacted,
        Conflict,
        CorruptDatabase,
        InvalidArgument,
        LimitExceeded,
        NotFound,
        StateError,
        StorageError,
        StoreLocked,
    )
    from plantd.state.store import Event, Limits, Listener, StateStore

_HOMES = {
    "Compacted": "plantd.state.errors",
    "Conflict": "plantd.state.errors",
    "CorruptDatabase": "plantd.state.errors",
    "InvalidArgument": "plantd.state.errors",
    "LimitExceeded": "plantd.state.errors",
    "NotFound": "plantd.state.errors",
    "StateError": "plantd.state.errors",
    "StorageError": "plantd.state.errors",
    "StoreLocked": "plantd.state.errors",
    "Event": "plantd.state.store",
    "Limits": "plantd.state.store",
    "Listener": "plantd.state.store",
    "StateStore": "plantd.state.store",
}

__all__ = [
    "Compacted",
    "Conflict",
    "CorruptDatabase",
    "Event",
    "InvalidArgument",
    "LimitExceeded",
    "Limits",
    "Listener",
    "NotFound",
    "StateError",
    "StateStore",
    "StorageError",
    "StoreLocked",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'plantd.state' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once
    return value
