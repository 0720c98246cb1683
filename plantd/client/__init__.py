"""Client side of plantd: clients, workers and bus helpers. Never imports Textual.

Names are imported lazily so ``from plantd.client import SyncClient`` (the CLI) does not
pay for asyncio and zmq.asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantd.client.bus import Publisher, Subscriber
    from plantd.client.client import Client
    from plantd.client.state import StateClient, SyncStateClient
    from plantd.client.sync import SyncClient
    from plantd.client.worker import Worker

__all__ = [
    "Client",
    "Publisher",
    "StateClient",
    "Subscriber",
    "SyncClient",
    "SyncStateClient",
    "Worker",
]

_WHERE = {
    "Client": "plantd.client.client",
    "SyncClient": "plantd.client.sync",
    "StateClient": "plantd.client.state",
    "SyncStateClient": "plantd.client.state",
    "Worker": "plantd.client.worker",
    "Publisher": "plantd.client.bus",
    "Subscriber": "plantd.client.bus",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
