"""Typed client of the state service ``org.plantd.State``: async, and its blocking twin.

    async with StateClient.connect(endpoint) as state:
        kv = await state.get("plc1", "setpoint")           # KeyValue, revisions included
        await state.set("plc1", "setpoint", 21.5, prev_revision=kv.mod_revision)
        async for kv in state.list_keys("plc1"):           # every page, one in memory
            ...
        async for ev in state.watch(since=kv.mod_revision, bus=STATE_BUS):
            ...                                            # no gap, no duplicate, resumes

Requests and replies are built and read here once (``_Op``: operation, request document,
decoder, no I/O); :class:`StateClient` sends them with :class:`plantd.client.Client`,
:class:`SyncStateClient` with :class:`plantd.client.SyncClient`. Errors are the client's
exceptions (:mod:`plantd.client.errors`): ``RequestRejected`` with the service's ``code``
(``not_found``, ``conflict``, ``invalid_argument`` ...) for a refusal, ``ProtocolError`` for a
reply this module cannot read. This module imports neither client at import time, so the
CLI's ``plant state get`` does not load asyncio.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from plantd.client import errors
from plantd.vocabulary import STATE_SERVICE

if TYPE_CHECKING:
    from plantd.client.client import Client
    from plantd.client.sync import SyncClient

__all__ = [
    "SERVICE",
    "Deleted",
    "ExportPage",
    "ImportResult",
    "KeyValue",
    "Page",
    "ScopeCreated",
    "ScopeDeleted",
    "ScopeInfo",
    "StateClient",
    "StateWatch",
    "SyncStateClient",
    "TxnResult",
    "WatchEvent",
    "WatchPage",
    "Written",
]

SERVICE = STATE_SERVICE

T = TypeVar("T")

#: ``data`` of a result built by hand. Results are NamedTuples, not dataclasses:
#: ``plant state get`` imports this module, and 16 frozen dataclasses cost ~10 ms of start-up
_NO_DATA: Mapping[str, Any] = MappingProxyType({})

# --------------------------------------------------------------------------- results
# Each result keeps the reply's ``data`` object as the service sent it (``data``): what
# ``-o json`` prints, with the fields a newer service may add.


class KeyValue(NamedTuple):
    """One key: its value and revisions (``revision``: the store revision of the read)."""

    scope: str
    key: str
    value: Any = None
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    updated: Any = None
    expires: Any = None
    revision: int = 0
    data: Mapping[str, Any] = _NO_DATA


class Written(NamedTuple):
    """The outcome of ``set``; ``prev`` is the key before the write (``return_prev``)."""

    scope: str
    key: str
    value: Any
    revision: int
    create_revision: int
    mod_revision: int
    version: int
    prev: KeyValue | None = None
    data: Mapping[str, Any] = _NO_DATA


class Deleted(NamedTuple):
    scope: str
    key: str
    revision: int
    prev_mod_revision: int = 0
    data: Mapping[str, Any] = _NO_DATA


class ScopeCreated(NamedTuple):
    """``created`` is False for a scope that existed already (no new revision)."""

    scope: str
    created: bool
    revision: int
    data: Mapping[str, Any] = _NO_DATA


class ScopeDeleted(NamedTuple):
    scope: str
    revision: int
    deleted_keys: int
    data: Mapping[str, Any] = _NO_DATA


class ScopeInfo(NamedTuple):
    scope: str
    keys: int = 0
    create_revision: int = 0
    data: Mapping[str, Any] = _NO_DATA


class TxnResult(NamedTuple):
    revision: int
    results: list[Any]
    data: Mapping[str, Any] = _NO_DATA


class ImportResult(NamedTuple):
    revision: int
    scopes: int
    keys: int
    data: Mapping[str, Any] = _NO_DATA


class Page(NamedTuple, Generic[T]):
    """One page of a listing (shared paging contract): ``next`` is the ``after`` of the
    following page, ``None`` after the last; ``total`` the size of the whole listing."""

    items: list[T]
    more: bool = False
    next: Any = None
    total: int | None = None
    revision: int | None = None


class ExportPage(NamedTuple):
    """One page of an export: ``{scope: {key: value}}`` at ``revision``."""

    revision: int
    scopes: dict[str, dict[str, Any]]
    more: bool = False
    next: Any = None


class WatchEvent(NamedTuple):
    """One committed change (``op``: set, delete, expire, create-scope, delete-scope, ...);
    ``key`` is None for scope events."""

    revision: int
    op: str
    scope: str
    key: str | None = None
    value: Any = None
    ts: Any = None
    data: Mapping[str, Any] = _NO_DATA


class WatchPage(NamedTuple):
    """One page of the ``watch`` history: the events after the asked revision, and how
    far the history was scanned (``revision``: resume from it)."""

    events: list[WatchEvent]
    revision: int
    more: bool = False
    compact_revision: int | None = None


# --------------------------------------------------------------------------- decoding


def _field(d: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = d.get(name, default)
    if value is default:
        return value
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        what = getattr(kind, "__name__", kind)
        raise errors.ProtocolError(f"state reply: field '{name}' must be {what}, got {value!r:.60}")
    return value


def _int(d: Mapping[str, Any], name: str, default: int = 0) -> int:
    value: int = _field(d, name, int, default)
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise errors.ProtocolError(
            f"state reply to {what}: data must be an object, got {data!r:.60}"
        )
    return data


def decode_key_value(data: Any, scope: str = "") -> KeyValue:
    d = _object(data, "a key")
    return KeyValue(
        scope=str(d.get("scope", scope)),
        key=str(_field(d, "key", str, "")),
        value=d.get("value"),
        create_revision=_int(d, "create_revision"),
        mod_revision=_int(d, "mod_revision"),
        version=_int(d, "version"),
        updated=d.get("updated"),
        expires=d.get("expires"),
        revision=_int(d, "revision"),
        data=d,
    )


def decode_written(data: Any) -> Written:
    d = _object(data, "set")
    prev = d.get("prev")
    return Written(
        scope=str(d.get("scope", "")),
        key=str(d.get("key", "")),
        value=d.get("value"),
        revision=_int(d, "revision"),
        create_revision=_int(d, "create_revision"),
        mod_revision=_int(d, "mod_revision"),
        version=_int(d, "version"),
        prev=None if prev is None else decode_key_value(prev, str(d.get("scope", ""))),
        data=d,
    )


def decode_event(doc: Any) -> WatchEvent | None:
    """A change event (``watch`` page or state bus); None for one without a revision."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("revision"), int):
        return None
    key = doc.get("key")
    return WatchEvent(
        revision=doc["revision"],
        op=str(doc.get("op", "")),
        scope=str(doc.get("scope", "")),
        key=None if key is None else str(key),
        value=doc.get("value"),
        ts=doc.get("ts"),
        data=doc,
    )


def _page(data: Any, field_name: str, item: Callable[[Any], T]) -> Page[T]:
    d = _object(data, field_name)
    items = d.get(field_name) or []
    if not isinstance(items, list):
        raise errors.ProtocolError(f"state reply: field '{field_name}' must be a list")
    more = bool(d.get("more")) and d.get("next") is not None
    total = d.get("total")
    revision = d.get("revision")
    return Page(
        [item(x) for x in items],
        more,
        d.get("next") if more else None,
        total if isinstance(total, int) else None,
        revision if isinstance(revision, int) else None,
    )


def decode_scope_info(doc: Any) -> ScopeInfo:
    d = _object(doc, "list-scopes")
    return ScopeInfo(str(d.get("scope", "")), _int(d, "keys"), _int(d, "create_revision"), data=d)


def decode_export_page(data: Any) -> ExportPage:
    d = _object(data, "export")
    scopes = d.get("scopes") or {}
    if not isinstance(scopes, Mapping):
        raise errors.ProtocolError("state reply: field 'scopes' must be an object")
    return ExportPage(_int(d, "revision"), dict(scopes), bool(d.get("more")), d.get("next"))


def decode_watch_page(data: Any, since: int | None) -> WatchPage:
    d = _object(data, "watch")
    events = [ev for ev in map(decode_event, d.get("events") or []) if ev is not None]
    compact = d.get("compact_revision")
    return WatchPage(
        events,
        _int(d, "revision", since or 0),
        bool(d.get("more")),
        compact if isinstance(compact, int) else None,
    )


def reply_data(reply: Any) -> Any:
    """The ``data`` of a reply document (a reply without the envelope is its own data)."""
    return reply.get("data", reply) if isinstance(reply, dict) else reply


# --------------------------------------------------------------------------- requests


class _Op(NamedTuple, Generic[T]):
    """One request and how to read its reply's ``data``: no I/O, shared by both clients."""

    operation: str
    doc: dict[str, Any]
    decode: Callable[[Any], T]


def _optional(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``doc`` plus the fields that are set (an unset field is not sent at all)."""
    doc.update({k: v for k, v in fields.items() if v is not None and v is not False})
    return doc


def _write_id(request_id: str | None) -> str:
    """The ``request_id`` a write is sent with: the caller's, else a fresh one. Every write
    carries one, so a client that resends it (a timeout, a failover to another broker) has
    it applied once: the service answers the copy with the first outcome."""
    return request_id if request_id is not None else uuid.uuid4().hex


def _get(scope: str, key: str) -> _Op[KeyValue]:
    return _Op("state-get", {"service": scope, "key": key}, decode_key_value)


def _set(
    scope: str,
    key: str,
    value: Any,
    prev_revision: int | None,
    if_absent: bool,
    ttl: float | None,
    return_prev: bool,
    request_id: str | None,
) -> _Op[Written]:
    request_id = _write_id(request_id)
    doc = {"service": scope, "key": key, "value": value}
    _optional(doc, return_prev=return_prev, request_id=request_id)
    if prev_revision is not None:  # 0 is a value: "only if absent"
        doc["prev_revision"] = prev_revision
    _optional(doc, if_absent=if_absent, ttl=ttl)
    return _Op("state-set", doc, decode_written)


def _delete(
    scope: str, key: str, prev_revision: int | None, request_id: str | None
) -> _Op[Deleted]:
    request_id = _write_id(request_id)

    def decode(data: Any) -> Deleted:
        d = _object(data, "delete")
        return Deleted(
            str(d.get("scope", scope)),
            str(d.get("key", key)),
            _int(d, "revision"),
            _int(d, "prev_mod_revision"),
            data=d,
        )

    doc = _optional({"service": scope, "key": key}, request_id=request_id)
    if prev_revision is not None:
        doc["prev_revision"] = prev_revision
    return _Op("delete", doc, decode)


def _txn(ops: list[dict[str, Any]], scope: str | None, request_id: str | None) -> _Op[TxnResult]:
    request_id = _write_id(request_id)

    def decode(data: Any) -> TxnResult:
        d = _object(data, "txn")
        results = d.get("results") or []
        return TxnResult(_int(d, "revision"), list(results), data=d)

    return _Op("txn", _optional({"ops": ops}, service=scope, request_id=request_id), decode)


def _create_scope(scope: str, request_id: str | None) -> _Op[ScopeCreated]:
    request_id = _write_id(request_id)

    def decode(data: Any) -> ScopeCreated:
        d = _object(data, "create-scope")
        return ScopeCreated(
            str(d.get("scope", scope)), bool(d.get("created")), _int(d, "revision"), data=d
        )

    return _Op("create-scope", _optional({"service": scope}, request_id=request_id), decode)


def _delete_scope(scope: str, request_id: str | None) -> _Op[ScopeDeleted]:
    request_id = _write_id(request_id)

    def decode(data: Any) -> ScopeDeleted:
        d = _object(data, "delete-scope")
        return ScopeDeleted(
            str(d.get("scope", scope)), _int(d, "revision"), _int(d, "deleted_keys"), data=d
        )

    return _Op("delete-scope", _optional({"service": scope}, request_id=request_id), decode)


def _keys_doc(
    scope: str, prefix: str, glob: str, values: bool, after: str | None, limit: int | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"service": scope}
    if not values:
        doc["values"] = False
    return _optional(doc, prefix=prefix or None, glob=glob or None, after=after, limit=limit)


def _list_keys_page(scope: str, doc: dict[str, Any]) -> _Op[Page[KeyValue]]:
    return _Op("list-keys", doc, lambda d: _page(d, "keys", lambda x: decode_key_value(x, scope)))


def _list_scopes_page(doc: dict[str, Any]) -> _Op[Page[ScopeInfo]]:
    return _Op("list-scopes", doc, lambda d: _page(d, "details", decode_scope_info))


def _watch_page(since: int | None, scope: str | None, limit: int | None) -> _Op[WatchPage]:
    doc = _optional({}, revision=since, service=scope, limit=limit)
    return _Op("watch", doc, lambda d: decode_watch_page(d, since))


def _import(doc: Any, replace: bool, request_id: str | None) -> _Op[ImportResult]:
    request_id = _write_id(request_id)

    def decode(data: Any) -> ImportResult:
        d = _object(data, "import")
        return ImportResult(_int(d, "revision"), _int(d, "scopes"), _int(d, "keys"), data=d)

    body = _optional({"doc": doc, "replace": replace}, request_id=request_id)
    body["replace"] = replace
    return _Op("import", body, decode)


# --------------------------------------------------------------------------- async client


class StateClient:
    """Async typed client of ``org.plantd.State`` over a :class:`plantd.client.Client`.

    Give it a client to share (the console does), or use :meth:`connect` to own one.
    """

    def __init__(self, client: Client, *, service: str = SERVICE, owned: bool = False) -> None:
        self.client = client
        self.service = service
        self._owned = owned

    @classmethod
    def connect(cls, endpoint: str | None = None, **client_options: Any) -> StateClient:
        """A StateClient with its own :class:`Client` (closed by :meth:`close`)."""
        from plantd.client.client import Client
        from plantd.client.reply import DEFAULT_ENDPOINT

        return cls(Client(endpoint or DEFAULT_ENDPOINT, **client_options), owned=True)

    async def __aenter__(self) -> StateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned:
            await self.client.close()

    async def _run(self, op: _Op[T]) -> T:
        return op.decode(await self.call(op.operation, op.doc))

    async def call(self, operation: str, doc: dict[str, Any]) -> Any:
        """Any other operation (``backup``, ``health`` ...): the reply's ``data``, untyped."""
        return reply_data(await self.client.call(self.service, operation, doc))

    async def get(self, scope: str, key: str) -> KeyValue:
        """The key now; ``RequestRejected`` (code ``not_found``) if it or its scope is absent."""
        return await self._run(_get(scope, key))

    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        prev_revision: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        return_prev: bool = False,
        request_id: str | None = None,
    ) -> Written:
        """Write a key. ``prev_revision``: only if its mod_revision is N (0: absent), else
        ``RequestRejected`` code ``conflict``; ``request_id`` makes a retry apply once."""
        return await self._run(
            _set(scope, key, value, prev_revision, if_absent, ttl, return_prev, request_id)
        )

    async def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
    ) -> Deleted:
        return await self._run(_delete(scope, key, prev_revision, request_id))

    async def txn(
        self,
        ops: list[dict[str, Any]],
        *,
        scope: str | None = None,
        request_id: str | None = None,
    ) -> TxnResult:
        """Apply ``ops`` (the wire's txn operations) as one revision, all or nothing."""
        return await self._run(_txn(ops, scope, request_id))

    async def create_scope(self, scope: str, *, request_id: str | None = None) -> ScopeCreated:
        return await self._run(_create_scope(scope, request_id))

    async def delete_scope(self, scope: str, *, request_id: str | None = None) -> ScopeDeleted:
        return await self._run(_delete_scope(scope, request_id))

    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        values: bool = True,
        after: str | None = None,
        limit: int | None = None,
    ) -> Page[KeyValue]:
        doc = _keys_doc(scope, prefix, glob, values, after, limit)
        return await self._run(_list_keys_page(scope, doc))

    async def list_keys(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        values: bool = True,
        limit: int | None = None,
    ) -> AsyncIterator[KeyValue]:
        """Every key of ``scope`` in name order, page by page (``limit``: page size)."""
        from plantd.client.paging import pages

        doc = _keys_doc(scope, prefix, glob, values, None, limit)
        async for item in pages(self.client, self.service, "list-keys", doc, "keys"):
            yield decode_key_value(item, scope)

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Page[ScopeInfo]:
        return await self._run(
            _list_scopes_page(_optional({}, prefix=prefix or None, after=after, limit=limit))
        )

    async def list_scopes(self, *, prefix: str = "") -> AsyncIterator[ScopeInfo]:
        from plantd.client.paging import pages

        doc = _optional({}, prefix=prefix or None)
        async for item in pages(self.client, self.service, "list-scopes", doc, "details"):
            yield decode_scope_info(item)

    async def export(self) -> AsyncIterator[ExportPage]:
        """The whole store as export pages streamed from ONE snapshot (one revision)."""
        from plantd.client.paging import pages

        async for page in pages(self.client, self.service, "export", {}, stream=True):
            yield decode_export_page(page)

    async def import_(
        self, doc: Any, *, replace: bool = False, request_id: str | None = None
    ) -> ImportResult:
        """Apply one export document as one revision."""
        return await self._run(_import(doc, replace, request_id))

    async def watch_page(
        self, since: int | None = None, *, scope: str | None = None, limit: int | None = None
    ) -> WatchPage:
        """One page of the history after ``since`` (None: no events, the head revision).
        A ``since`` older than the history: ``RequestRejected`` with ``doc["reason"] ==
        "compacted"``."""
        return await self._run(_watch_page(since, scope, limit))

    def watch(
        self,
        since: int | None = None,
        *,
        bus: str,
        scope: str | None = None,
        key: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> StateWatch:
        """Every change after revision ``since`` (None: from now on), in revision order,
        no gap and no duplicate, across broker and state daemon restarts; ``bus`` is the
        state bus backend (subscriber side). See :class:`StateWatch`."""
        return StateWatch(self, bus=bus, since=since, scope=scope, key=key, notify=notify)


# --------------------------------------------------------------------------- watch


class StateWatch:
    """A resumable, gap-free change stream: an async iterator of :class:`WatchEvent`.

    Subscribes to the state bus FIRST (every topic, so every revision is seen and a gap
    shows as a jump), then replays the history after ``since`` through the ``watch``
    operation, then yields bus events: those at or below the replayed revision are
    duplicates and dropped, a jump in revisions is filled from the history. A broker
    restart is noticed by probing its endpoint while idle; once it is back the history
    since the last yielded revision is replayed (resync), so nothing is lost. A resubscription
    cannot be observed (events published before it reaches the restarted proxy are gone, and
    a lost tail shows no jump), so while the bus is quiet the history is replayed again, at
    growing intervals up to :attr:`QUIET_RESYNC` - one cheap request, no events when none
    were lost.
    :attr:`revision` is where to resume a later watch from (every revision up to it was
    yielded). ``notify`` receives one line for each outage and recovery.
    """

    #: a bus subscription needs a moment to reach the proxy: replay once more after it
    SETTLE = 0.3
    #: the longest the bus may stay quiet before the history is checked again
    QUIET_RESYNC = 2.0
    IDLE = 0.25
    PROBE_EVERY = 1.0

    def __init__(
        self,
        state: StateClient,
        *,
        bus: str,
        since: int | None,
        scope: str | None = None,
        key: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.bus = bus
        self.since = since
        self.scope = scope
        self.key = key
        self.notify = notify or (lambda line: None)
        self.last = since or 0  # every revision <= last has been handled
        self.current: int | None = None  # revision being yielded from the bus

    @property
    def revision(self) -> int:
        """Resume point: the revision of the last event yielded, or how far the history was
        scanned past it (events filtered out). The events of one txn share a revision, so
        a consumer that stops between two of them resumes after the whole txn."""
        return self.current or self.last

    def _matches(self, ev: WatchEvent) -> bool:
        if self.scope is not None and ev.scope != self.scope:
            return False
        if self.key is not None and ev.key != self.key:
            return ev.op == "delete-scope"  # deletes every key of the scope
        return True

    async def _replay(self, since: int | None) -> AsyncIterator[WatchEvent]:
        """The history after ``since`` (None: start at the head)."""
        if self.current is not None:  # a revision from the bus is complete by now
            self.last, self.current = self.current, None
        if since is not None:
            since = max(since, self.last)
        while True:
            page = await self.state.watch_page(since, scope=self.scope)
            for ev in page.events:
                if self._matches(ev):
                    yield ev
            since = page.revision
            self.last = max(self.last, since)
            if not page.more:
                return

    async def _on_bus(self, doc: Any) -> AsyncIterator[WatchEvent]:
        ev = decode_event(doc)
        if ev is None or ev.revision <= self.last:
            return  # not an event, or already replayed from the history
        if ev.revision == self.current:  # the next event of the same revision (a txn)
            if self._matches(ev):
                yield ev
            return
        if self.current is not None:
            self.last, self.current = self.current, None
        if ev.revision > self.last + 1:
            # the bus lost something (reconnect, slow consumer): fill from the history
            async for old in self._replay(self.last):
                yield old
            if ev.revision <= self.last:
                return
        self.current = ev.revision
        if self._matches(ev):
            yield ev

    def _back(self) -> None:
        self.notify(
            f"broker back at {self.state.client.endpoint}; resyncing after revision"
            f" {self.current or self.last}"
        )

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        import asyncio

        from plantd.client.bus import Subscriber
        from plantd.client.reply import probe_async

        transient = (
            errors.BrokerUnreachable,
            errors.RequestTimeout,
            errors.ServiceUnavailable,
            errors.UnknownService,
        )
        endpoint = self.state.client.endpoint
        sub = Subscriber(self.bus, topics=[""])
        try:
            async for ev in self._replay(self.since):
                yield ev
            delay = self.SETTLE  # until the next replay; doubles while the bus stays quiet
            resync_at = time.monotonic() + delay
            next_probe = time.monotonic() + self.PROBE_EVERY
            lost = False
            while True:
                try:
                    _topic, doc = await sub.recv(timeout=self.IDLE)
                except TimeoutError:
                    pass
                else:
                    if lost:  # the bus delivers again: the broker is back
                        lost = False
                        self._back()
                        delay = self.SETTLE
                    # the bus is live: whatever it missed before this event shows as a jump
                    resync_at = time.monotonic() + delay
                    async for ev in self._on_bus(doc):
                        yield ev
                    continue
                now = time.monotonic()
                if now >= next_probe:
                    next_probe = now + self.PROBE_EVERY
                    reason = await probe_async(endpoint)
                    if reason is not None and not lost:
                        lost = True
                        self.notify(f"{reason}; reconnecting (last revision {self.last})")
                    elif reason is None and lost:
                        lost = False
                        self._back()
                        delay = self.SETTLE
                        resync_at = now + delay
                if not lost and now >= resync_at:
                    try:
                        async for ev in self._replay(self.last):
                            yield ev
                        delay = min(delay * 2, self.QUIET_RESYNC)
                        resync_at = time.monotonic() + delay
                    except transient as exc:
                        self.notify(f"state service not answering ({_one_line(exc)}); retrying")
                        resync_at = now + 1.0
                await asyncio.sleep(0)
        finally:
            sub.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- blocking twin


class SyncStateClient:
    """:class:`StateClient` over the blocking :class:`plantd.client.SyncClient` (the CLI):
    the same methods, no event loop (``watch`` runs the async one on a private loop)."""

    def __init__(self, client: SyncClient, *, service: str = SERVICE, owned: bool = False) -> None:
        self.client = client
        self.service = service
        self._owned = owned

    @classmethod
    def connect(cls, endpoint: str | None = None, **client_options: Any) -> SyncStateClient:
        from plantd.client.reply import DEFAULT_ENDPOINT
        from plantd.client.sync import SyncClient

        return cls(SyncClient(endpoint or DEFAULT_ENDPOINT, **client_options), owned=True)

    def __enter__(self) -> SyncStateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def _run(self, op: _Op[T]) -> T:
        return op.decode(self.call(op.operation, op.doc))

    def call(self, operation: str, doc: dict[str, Any]) -> Any:
        """Any other operation (``backup``, ``health`` ...): the reply's ``data``, untyped."""
        return reply_data(self.client.call(self.service, operation, doc))

    def get(self, scope: str, key: str) -> KeyValue:
        return self._run(_get(scope, key))

    def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        prev_revision: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        return_prev: bool = False,
        request_id: str | None = None,
    ) -> Written:
        return self._run(
            _set(scope, key, value, prev_revision, if_absent, ttl, return_prev, request_id)
        )

    def delete(
        self,
        scope: str,
        key: str,
        *,
        prev_revision: int | None = None,
        request_id: str | None = None,
    ) -> Deleted:
        return self._run(_delete(scope, key, prev_revision, request_id))

    def txn(
        self,
        ops: list[dict[str, Any]],
        *,
        scope: str | None = None,
        request_id: str | None = None,
    ) -> TxnResult:
        return self._run(_txn(ops, scope, request_id))

    def create_scope(self, scope: str, *, request_id: str | None = None) -> ScopeCreated:
        return self._run(_create_scope(scope, request_id))

    def delete_scope(self, scope: str, *, request_id: str | None = None) -> ScopeDeleted:
        return self._run(_delete_scope(scope, request_id))

    def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        values: bool = True,
        after: str | None = None,
        limit: int | None = None,
    ) -> Page[KeyValue]:
        doc = _keys_doc(scope, prefix, glob, values, after, limit)
        return self._run(_list_keys_page(scope, doc))

    def list_keys(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        values: bool = True,
        limit: int | None = None,
    ) -> Iterator[KeyValue]:
        from plantd.client.paging import pages_sync

        doc = _keys_doc(scope, prefix, glob, values, None, limit)
        for item in pages_sync(self.client, self.service, "list-keys", doc, "keys"):
            yield decode_key_value(item, scope)

    def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Page[ScopeInfo]:
        return self._run(
            _list_scopes_page(_optional({}, prefix=prefix or None, after=after, limit=limit))
        )

    def list_scopes(self, *, prefix: str = "") -> Iterator[ScopeInfo]:
        from plantd.client.paging import pages_sync

        doc = _optional({}, prefix=prefix or None)
        for item in pages_sync(self.client, self.service, "list-scopes", doc, "details"):
            yield decode_scope_info(item)

    def export(self) -> Iterator[ExportPage]:
        from plantd.client.paging import pages_sync

        for page in pages_sync(self.client, self.service, "export", {}, stream=True):
            yield decode_export_page(page)

    def import_(
        self, doc: Any, *, replace: bool = False, request_id: str | None = None
    ) -> ImportResult:
        return self._run(_import(doc, replace, request_id))

    def watch_page(
        self, since: int | None = None, *, scope: str | None = None, limit: int | None = None
    ) -> WatchPage:
        return self._run(_watch_page(since, scope, limit))

    def watch(
        self,
        since: int | None = None,
        *,
        bus: str,
        scope: str | None = None,
        key: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> Iterator[WatchEvent]:
        """:meth:`StateClient.watch`, blocking: runs it on a private event loop."""
        import asyncio

        from plantd.client.client import Client

        loop = asyncio.new_event_loop()
        c = self.client
        state = StateClient(Client(c.endpoint, timeout=c.timeout, retries=c.retries), owned=True)
        events = state.watch(since, bus=bus, scope=scope, key=key, notify=notify).__aiter__()
        try:
            while True:
                try:
                    ev = loop.run_until_complete(events.__anext__())
                except StopAsyncIteration:
                    return
                yield ev
        finally:
            loop.run_until_complete(events.aclose())  # type: ignore[attr-defined]
            loop.run_until_complete(state.close())
            loop.close()
