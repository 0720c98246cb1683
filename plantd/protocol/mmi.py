"""The JSON documents of the broker's MMI extensions, in one I/O-free place.

``mmi.services`` and ``mmi.workers`` answer one page ``{"services"|"workers": [...],
"more": bool, "next": cursor}``; ``mmi.broker`` answers one status object
(docs/protocol.md). The broker builds them with the ``encode_*`` functions, clients read them
with the ``decode_*`` functions, so the field names live here only. A decoder raises
:class:`MalformedDocument` naming the field that is missing or of the wrong type; fields it
does not know are ignored (a newer broker may add some).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "BrokerStatus",
    "ListingPage",
    "MalformedDocument",
    "ServiceEntry",
    "WorkerEntry",
    "decode_broker",
    "decode_services",
    "decode_workers",
    "encode_broker",
    "encode_page_tail",
    "encode_service",
    "encode_worker",
]

T = TypeVar("T")


class MalformedDocument(ValueError):
    """An MMI document lacks a field or has one of the wrong type (``field`` names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One service of ``mmi.services``."""

    name: str
    workers: int = 0
    idle: int = 0
    busy: int = 0
    queue: int = 0
    requests: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """One worker of ``mmi.workers``; ``identity`` is the routing identity in hex."""

    identity: str
    service: str
    state: str = "idle"
    last_heartbeat_s: float = 0.0
    connected_s: float = 0.0
    served: int = 0
    dialect: str = ""


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """``mmi.broker``: version, uptime, totals, counters and the settings in force."""

    version: str
    uptime_s: float
    services: int = 0
    workers: int = 0
    queued: int = 0
    queued_bytes: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: the broker's wall clock when it answered (epoch seconds): clients measure skew with it
    time: float | None = None


@dataclass(frozen=True, slots=True)
class ListingPage(Generic[T]):
    """One page of a paged MMI listing; ``next`` is the ``after`` of the following page."""

    entries: list[T]
    more: bool = False
    next: str | None = None


# --------------------------------------------------------------------------- encoders


def encode_service(entry: ServiceEntry) -> dict[str, object]:
    return asdict(entry)


def encode_worker(entry: WorkerEntry) -> dict[str, object]:
    return asdict(entry)


def encode_broker(status: BrokerStatus) -> dict[str, object]:
    return asdict(status)


def encode_page_tail(more: bool, last: str | None) -> dict[str, object]:
    """The paging fields after a listing's entries (``next`` only when there is more)."""
    return {"more": more, "next": last if more else None}


# --------------------------------------------------------------------------- decoders


def _int(doc: Mapping[str, Any], name: str, where: str, default: int | None = None) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedDocument(f"{where}.{name}", f"must be an integer, got {value!r}")
    return value


def _float(doc: Mapping[str, Any], name: str, where: str, default: float | None = None) -> float:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedDocument(f"{where}.{name}", f"must be a number, got {value!r}")
    return float(value)


def _str(doc: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise MalformedDocument(f"{where}.{name}", f"must be a string, got {value!r}")
    return value


def _object(doc: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise MalformedDocument(where, f"must be a JSON object, got {type(doc).__name__}")
    return doc


def decode_service(doc: Any, where: str = "service") -> ServiceEntry:
    d = _object(doc, where)
    return ServiceEntry(
        name=_str(d, "name", where),
        workers=_int(d, "workers", where, 0),
        idle=_int(d, "idle", where, 0),
        busy=_int(d, "busy", where, 0),
        queue=_int(d, "queue", where, 0),
        requests=_int(d, "requests", where, 0),
        failed=_int(d, "failed", where, 0),
    )


def decode_worker(doc: Any, where: str = "worker") -> WorkerEntry:
    d = _object(doc, where)
    return WorkerEntry(
        identity=_str(d, "identity", where),
        service=_str(d, "service", where),
        state=_str(d, "state", where, "idle"),
        last_heartbeat_s=_float(d, "last_heartbeat_s", where, 0.0),
        connected_s=_float(d, "connected_s", where, 0.0),
        served=_int(d, "served", where, 0),
        dialect=_str(d, "dialect", where, ""),
    )


def _page(doc: Any, key: str, entry: Callable[[Any, str], T]) -> ListingPage[T]:
    d = _object(doc, "reply")
    items = d.get(key, [])
    if not isinstance(items, list):
        raise MalformedDocument(key, f"must be a list, got {type(items).__name__}")
    entries = [entry(item, f"{key}[{i}]") for i, item in enumerate(items)]
    more = d.get("more", False)
    if not isinstance(more, bool):
        raise MalformedDocument("more", f"must be true or false, got {more!r}")
    nxt = d.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise MalformedDocument("next", f"must be a string or null, got {nxt!r}")
    return ListingPage(entries, more and nxt is not None, nxt if more else None)


def decode_services(doc: Any) -> ListingPage[ServiceEntry]:
    """One ``mmi.services`` page (a broker that does not page sends one complete page)."""
    return _page(doc, "services", decode_service)


def decode_workers(doc: Any) -> ListingPage[WorkerEntry]:
    """One ``mmi.workers`` page."""
    return _page(doc, "workers", decode_worker)


def decode_broker(doc: Any) -> BrokerStatus:
    """The ``mmi.broker`` status document."""
    d = _object(doc, "broker")
    counters = _object(d.get("counters", {}), "broker.counters")
    settings = _object(d.get("settings", {}), "broker.settings")
    return BrokerStatus(
        version=_str(d, "version", "broker"),
        uptime_s=_float(d, "uptime_s", "broker"),
        services=_int(d, "services", "broker", 0),
        workers=_int(d, "workers", "broker", 0),
        queued=_int(d, "queued", "broker", 0),
        queued_bytes=_int(d, "queued_bytes", "broker", 0),
        counters={str(k): _int(counters, k, "broker.counters") for k in counters},
        settings=dict(settings),
        time=_float(d, "time", "broker") if d.get("time") is not None else None,
    )
