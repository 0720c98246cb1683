"""Durable scoped key-value store of the state service (storage layer, no networking)."""

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
