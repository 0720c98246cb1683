"""Data-source layer of the TUI: every byte of network I/O the console does goes through here.

The app only knows the `DataSource` protocol, so tests feed it a fake and views never see sockets.
This module must not import Textual (the console's I/O has to stay testable headless) and imports
`plantd.client` lazily (so `plant tui --help` and the unit tests stay fast).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from plantd.protocol.envelope import CONFLICT, NOT_FOUND
from plantd.vocabulary import (
    BROKER_ENDPOINT,
    IDENTITY_SERVICE,
    LOGGER_SERVICE,
    STATE_SERVICE,
    bus,
)

DEFAULT_ENDPOINT = BROKER_ENDPOINT
DEFAULT_STATE_BUS = bus("state").subscribe
DEFAULT_LOG_BUS = bus("log").subscribe
#: roles that may write somewhere (a principal with none of them is shown read-only)
WRITING_ROLES = frozenset({"operator", "engineer", "admin"})
HISTORY_ROWS = 20  # the State view shows a key's newest changes, not its whole audit
MAX_PAGES = 10_000  # a listing that never says "more: false" is cut here, not followed forever
LOG_PAGE_MAX = 10_000  # the logger's maximum `limit`
LOG_HISTORY_PAGES = 50  # log history is a convenience: a few pages, never the whole store


# --------------------------------------------------------------------------- errors


class SourceError(Exception):
    """A request failed; the message is written for the operator, not for a traceback."""


class Disconnected(SourceError):
    """The broker cannot be reached (or did not answer in time): the console shows a banner."""


class ServiceError(SourceError):
    """The broker or a service rejected a request (unknown service, no worker, bad reply...)."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class Conflict(ServiceError):
    """Compare-and-set failed: someone else wrote the key first; never overwrite silently."""

    def __init__(self, message: str, revision: int | None = None) -> None:
        super().__init__(message, code=CONFLICT)
        self.revision = revision


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One broker service as reported by `mmi.services` (fields the broker lacks are None)."""

    name: str
    workers: int = 0
    queue: int = 0
    requests: int | None = None  # cumulative counter, for a rate computed by the view
    rate: float | None = None  # requests/s when the broker reports it directly
    status: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One registered worker as reported by `mmi.workers`."""

    identity: str
    service: str
    heartbeat_age: float | None = None  # seconds since the broker last heard from it
    state: str = ""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Broker-wide facts from `mmi.broker`; heartbeat settings classify late/expired workers."""

    heartbeat_interval: float = 2.5
    liveness: int = 3
    version: str = ""
    uptime: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key of a state scope, as `list-keys` returns it."""

    key: str
    value: Any
    mod_revision: int = 0
    create_revision: int = 0
    version: int = 0
    updated: str = ""  # ISO-8601 or epoch seconds as text (the real service sends epoch)


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of `list-keys`: `next` is the `after` of the following page (None: last page).

    `total` counts the live keys of the scope matching the filter (None when the service did
    not say); it is the virtual table's height."""

    entries: list[KeyEntry]
    total: int | None = None
    more: bool = False
    next: str | None = None


@dataclass(frozen=True, slots=True)
class ScopePage:
    """One page of `list-scopes` (names in name order)."""

    scopes: list[str]
    total: int | None = None
    more: bool = False
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the broker says the console is (org.plantd.Identity ``whoami``)."""

    principal: str | None
    roles: tuple[str, ...] = ()
    secure: bool = True

    @property
    def may_write(self) -> bool:
        """False for a principal whose roles only read (a viewer): its writes are disabled.
        Roles the console does not know may write by policy: the service decides then."""
        if self.principal is None:
            return True  # security off: the service decides
        known = {r for r in self.roles if r in WRITING_ROLES or r == "viewer"}
        return bool(set(self.roles) - known) or bool(known & WRITING_ROLES)

    @property
    def label(self) -> str:
        if self.principal is None:
            return "anonymous (security off)" if not self.secure else "anonymous"
        return f"{self.principal} ({', '.join(self.roles) or 'no roles'})"


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One audit row of a key: who changed it, how, when (org.plantd.Identity ``audit-list``)."""

    seq: int
    ts: float
    principal: str
    operation: str
    outcome: str
    old: Any = None
    new: Any = None
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """One message of the state bus (topic = scope)."""

    scope: str
    key: str
    op: str
    value: Any = None
    revision: int = 0
    ts: str = ""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log-bus record; `seq` counts per producer so gaps reveal dropped records."""

    ts: float
    level: str
    service: str
    msg: str
    host: str = ""
    pid: int = 0
    logger: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyPart:
    """One reply part of a call (1-based); the last part yielded before the end is the FINAL."""

    frames: tuple[bytes, ...]
    index: int


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True, slots=True)
class BrokerReach:
    """Whether the console reaches one of its brokers: "up", "down" or "unknown" (not
    tried yet), and whether it is the one in use."""

    endpoint: str
    state: str
    current: bool = False


@runtime_checkable
class DataSource(Protocol):
    """Everything the console reads or writes; implemented by `LiveSource` and the test fake."""

    endpoint: str

    def brokers(self) -> list[BrokerReach]: ...

    async def services(self) -> list[ServiceInfo]: ...
    async def workers(self) -> list[WorkerInfo]: ...
    async def broker_info(self) -> BrokerInfo: ...
    async def ping(self) -> float: ...
    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> ScopePage: ...
    async def list_keys_page(
        self,
        scope: str,
        *,
        prefix: str = "",
        glob: str = "",
        after: str | None = None,
        limit: int | None = None,
        values: bool = True,
    ) -> KeyPage: ...
    async def get_key(self, scope: str, key: str) -> KeyEntry | None: ...
    async def set_key(
        self, scope: str, key: str, value: Any, prev_revision: int | None = None
    ) -> int: ...
    async def delete_key(self, scope: str, key: str, prev_revision: int | None = None) -> None: ...
    async def create_scope(self, scope: str) -> None: ...
    async def delete_scope(self, scope: str) -> None: ...
    def call(self, service: str, operation: str, body: bytes) -> AsyncIterator[ReplyPart]: ...
    def state_changes(self) -> AsyncIterator[StateChange]: ...
    def log_records(self) -> AsyncIterator[LogRecord]: ...
    async def query_logs(self, limit: int = 500) -> list[LogRecord]: ...
    async def whoami(self) -> Identity | None: ...
    async def key_history(self, scope: str, key: str) -> list[KeyChange]: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Endpoints and timeouts, read from `PLANTD_CLIENT_*` like the CLI does."""

    endpoint: str = DEFAULT_ENDPOINT
    timeout: float = 3.0
    state_bus: str = DEFAULT_STATE_BUS
    log_bus: str = DEFAULT_LOG_BUS

    @classmethod
    def from_env(
        cls, endpoint: str | None = None, env: Mapping[str, str] | None = None
    ) -> SourceSettings:
        """Like `plant state watch`/`plant log tail`: each bus's subscribe side from
        :func:`plantd.broker.settings.bus_endpoint` (`PLANTD_CLIENT_<BUS>_BUS_SUB`, its
        deprecated alias `PLANTD_CLIENT_<BUS>_BUS`, else the broker's own bus settings), so
        the console finds the buses of the stack `plant up` started without extra
        configuration."""
        env = os.environ if env is None else env
        try:
            timeout = float(env.get("PLANTD_CLIENT_TIMEOUT", "3.0"))
        except ValueError:
            timeout = 3.0
        return cls(
            endpoint=endpoint or env.get("PLANTD_CLIENT_ENDPOINT") or DEFAULT_ENDPOINT,
            timeout=timeout,
            state_bus=_bus(env, "state", DEFAULT_STATE_BUS),
            log_bus=_bus(env, "log", DEFAULT_LOG_BUS),
        )


def _bus(env: Mapping[str, str], name: str, default: str) -> str:
    """Bus ``name``'s subscribe side, the one resolution the CLI uses; ``default`` if the
    broker's configuration is broken (that must not keep the console from starting)."""
    from plantd.broker.settings import bus_endpoint
    from plantd.config import ConfigError

    try:
        return bus_endpoint(name, env=env)
    except ConfigError:
        return default


# --------------------------------------------------------------------------- parsing helpers
# `LiveSource` reads the broker's MMI documents with the typed decoders of
# plantd.protocol.mmi (the twins of the broker's own encoders) and the state service with
# plantd.client.state. The tolerant `parse_*` functions below read foreign shapes (other
# brokers, recorded documents) and stay for them.


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _first(doc: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in doc and doc[name] is not None:
            return doc[name]
    return None


def parse_ts(value: Any) -> float | None:
    """Epoch seconds from an epoch number or an ISO-8601 string (the bus uses either)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return float(value)
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def parse_key_entry(doc: Mapping[str, Any]) -> KeyEntry:
    """One `list-keys`/`state-get` entry."""
    return KeyEntry(
        key=str(doc.get("key", "")),
        value=doc.get("value"),
        mod_revision=_int(_first(doc, "mod_revision", "revision")),
        create_revision=_int(doc.get("create_revision")),
        version=_int(doc.get("version")),
        updated=str(_first(doc, "updated", "updated_at") or ""),
    )


def key_entry(kv: Any) -> KeyEntry:
    """A `plantd.client.state.KeyValue` as the console's `KeyEntry`."""
    return KeyEntry(
        key=kv.key,
        value=kv.value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        version=kv.version,
        updated="" if kv.updated is None else str(kv.updated),
    )


def _page_fields(data: Mapping[str, Any], count: int) -> tuple[int | None, bool, str | None]:
    """`total`, `more`, `next` of a paged reply; a reply without them is one complete page."""
    total = data.get("total")
    more = bool(data.get("more")) and data.get("next") is not None
    nxt = data.get("next") if more else None
    return (None if total is None else _int(total, count)), more, None if nxt is None else str(nxt)


def parse_key_page(data: Any) -> KeyPage:
    """A `list-keys` reply's data (the paging contract of docs/protocol.md)."""
    if not isinstance(data, Mapping):
        data = {"keys": data}
    entries = [parse_key_entry(k) for k in data.get("keys") or [] if isinstance(k, Mapping)]
    total, more, nxt = _page_fields(data, len(entries))
    return KeyPage(entries, total, more, nxt)


def parse_scope_page(data: Any) -> ScopePage:
    """A `list-scopes` reply's data."""
    if not isinstance(data, Mapping):
        data = {"scopes": data}
    scopes = [str(s) for s in data.get("scopes") or []]
    total, more, nxt = _page_fields(data, len(scopes))
    return ScopePage(scopes, total, more, nxt)


async def follow_pages(
    fetch: Callable[[Any], Awaitable[tuple[Any, bool, Any]]], max_pages: int = MAX_PAGES
) -> list[Any]:
    """Concatenate every page: `fetch(cursor)` returns (page document, more, next cursor).

    Stops at the last page, at a cursor that does not advance (a broken server must not
    spin the console) and after `max_pages`."""
    docs: list[Any] = []
    cursor: Any = None
    for _ in range(max_pages):
        doc, more, nxt = await fetch(cursor)
        docs.append(doc)
        if not more or nxt is None or nxt == cursor:
            break
        cursor = nxt
    return docs


def mmi_page_body(cursor: Any) -> tuple[bytes, ...]:
    """Request frames of an MMI listing page: none for the first page, else `{"after": ...}`."""
    return () if cursor is None else (json.dumps({"after": cursor}).encode(),)


def page_more(doc: Any) -> tuple[bool, Any]:
    """(`more`, `next`) of a listing reply (a service without paging sends neither)."""
    if isinstance(doc, Mapping) and isinstance(doc.get("data"), Mapping):
        doc = doc["data"]
    if not isinstance(doc, Mapping):
        return False, None
    return bool(doc.get("more")), doc.get("next")


def parse_state_change(topic: str, doc: Mapping[str, Any]) -> StateChange:
    """One state-bus message; the topic is the scope when the document lacks one.

    Scope events carry `"key": null` (not a key named "None"); `ts` is epoch seconds."""
    return StateChange(
        scope=str(doc.get("scope") or topic),
        key=str(doc.get("key") or ""),
        op=str(doc.get("op", "set")),
        value=doc.get("value"),
        revision=_int(doc.get("revision")),
        ts=str(doc.get("ts") or ""),
    )


def parse_log_record(topic: str, doc: Mapping[str, Any]) -> LogRecord:
    """One log-bus record; topic `<service>.<level>` fills fields the JSON lacks."""
    service, _, level = topic.rpartition(".")
    fields = doc.get("fields")
    seq = doc.get("seq")
    return LogRecord(
        ts=parse_ts(doc.get("ts")) or time.time(),
        level=str(doc.get("level") or level or "info").lower(),
        service=str(doc.get("service") or service or "?"),
        msg=str(doc.get("msg", "")),
        host=str(doc.get("host") or ""),
        pid=_int(doc.get("pid")),
        logger=str(doc.get("logger") or ""),
        fields=fields if isinstance(fields, Mapping) else {},
        seq=None if seq is None else _int(seq),
    )


def paging_body(fields: Mapping[str, Any], after: Any, limit: int | None) -> dict[str, Any]:
    """A list request: only the fields that are set, so a first page at the default size
    is the same request an unpaged client sends."""
    body = {k: v for k, v in fields.items() if v is not None}
    if after is not None:
        body["after"] = after
    if limit is not None:
        body["limit"] = limit
    return body


def state_reply(doc: Any) -> Any:
    """Unwrap a state-service reply: `data` on success, `Conflict`/`ServiceError` otherwise."""
    if not isinstance(doc, Mapping):
        raise ServiceError(f"unexpected reply from {STATE_SERVICE}: {doc!r:.80}")
    if doc.get("success", True) is False:
        message = str(doc.get("error") or "request rejected")
        code = str(doc.get("code") or "error")
        if code == CONFLICT:
            rev = doc.get("revision")
            raise Conflict(message, None if rev is None else _int(rev))
        raise ServiceError(message, code)
    return doc.get("data", {})


# --------------------------------------------------------------------------- live source


class LiveSource:
    """`DataSource` over `plantd.client` (one pooled async `Client`, one `Subscriber` per bus)."""

    def __init__(self, settings: SourceSettings | None = None) -> None:
        self.settings = settings or SourceSettings.from_env()
        self.endpoint = self.settings.endpoint
        self._client: Any = None
        self._brokers: Any = None  # plantd.client.failover.Brokers, kept across resets

    async def _get_client(self) -> Any:
        if self._client is None:
            from plantd.client import Client

            self._client = Client(
                self.endpoint, timeout=self.settings.timeout, retries=0, brokers=self._brokers
            )
            self._brokers = self._client.brokers
        return self._client

    def brokers(self) -> list[BrokerReach]:
        """The brokers of ``PLANTD_CLIENT_ENDPOINT`` and whether the client reaches them
        (it moves to another by itself when the one in use dies)."""
        if self._brokers is None:
            from plantd.config import parse_endpoints

            return [BrokerReach(e, "unknown") for e in parse_endpoints(self.endpoint)]
        current = self._brokers.current
        return [
            BrokerReach(s.endpoint, s.state, s.endpoint == current) for s in self._brokers.states()
        ]

    async def _reset(self) -> None:
        """Drop the client after a failure so the next request starts on fresh sockets."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _guard(self, coro_factory: Any, *, broker_only: bool = False) -> Any:
        """Run one request, translating client exceptions into the console's error types.

        `broker_only`: the request is answered by the broker itself (MMI), so silence means
        the broker is gone; for a service request silence only means that service is slow.
        """
        from plantd.client import errors

        try:
            client = await self._get_client()
            return await coro_factory(client)
        except errors.BrokerUnreachable as exc:
            await self._reset()
            raise Disconnected(str(exc) or "broker unreachable") from exc
        except errors.RequestTimeout as exc:
            if broker_only:
                await self._reset()
                raise Disconnected(str(exc) or "broker did not answer") from exc
            raise ServiceError(str(exc) or "request timed out", "timeout") from exc
        except errors.RequestRejected as exc:
            if exc.code == CONFLICT:
                rev = exc.doc.get("revision")
                raise Conflict(str(exc), None if rev is None else _int(rev)) from exc
            raise ServiceError(str(exc), exc.code) from exc
        except errors.UnknownService as exc:
            raise ServiceError(str(exc) or "unknown service", "unknown-service") from exc
        except errors.ServiceUnavailable as exc:
            raise ServiceError(str(exc) or "service unavailable", "unavailable") from exc
        except errors.PlantdError as exc:
            raise ServiceError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            await self._reset()
            raise Disconnected(str(exc)) from exc

    async def services(self) -> list[ServiceInfo]:
        """Every service (every page of `mmi.services`, decoded by plantd.protocol.mmi)."""
        entries = await self._guard(lambda c: c.services(), broker_only=True)
        return sorted(
            (ServiceInfo(s.name, s.workers, s.queue, s.requests) for s in entries),
            key=lambda s: s.name,
        )

    async def workers(self) -> list[WorkerInfo]:
        entries = await self._guard(lambda c: c.workers(), broker_only=True)
        return sorted(
            (WorkerInfo(w.identity, w.service, w.last_heartbeat_s, w.state) for w in entries),
            key=lambda w: (w.service, w.identity),
        )

    async def broker_info(self) -> BrokerInfo:
        from plantd.protocol.mmi import encode_broker

        status = await self._guard(lambda c: c.broker_status(), broker_only=True)
        interval = _float(status.settings.get("heartbeat_interval"))
        return BrokerInfo(
            heartbeat_interval=interval if interval and interval > 0 else 2.5,
            liveness=_int(status.settings.get("heartbeat_liveness"), 3) or 3,
            version=status.version,
            uptime=status.uptime_s,
            raw=encode_broker(status),
        )

    async def ping(self) -> float:
        return float(await self._guard(lambda c: c.ping(), broker_only=True))

    async def _state(self, request: Callable[[Any], Awaitable[Any]]) -> Any:
        """One request through the typed state client over the shared `Client`."""
        from plantd.client.state import StateClient

        return await self._guard(lambda c: request(StateClient(c, service=STATE_SERVICE)))

    async def list_scopes_page(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> ScopePage:
        page = await self._state(
            lambda st: st.list_scopes_page(prefix=prefix, after=after, limit=limit)
        )
        return ScopePage([s.scope for s in page.items], page.total, page.more, page.next)

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
        page = await self._state(
            lambda st: st.list_keys_page(
                scope, prefix=prefix, glob=glob, values=values, after=after, limit=limit
            )
        )
        return KeyPage([key_entry(kv) for kv in page.items], page.total, page.more, page.next)

    async def get_key(self, scope: str, key: str) -> KeyEntry | None:
        """The key now (None: it or its scope does not exist); the conflict dialog's "theirs"."""
        try:
            kv = await self._state(lambda st: st.get(scope, key))
        except ServiceError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        return key_entry(kv)

    async def set_key(
        self, scope: str, key: str, value: Any, prev_revision: int | None = None
    ) -> int:
        written = await self._state(
            lambda st: st.set(scope, key, value, prev_revision=prev_revision)
        )
        return int(written.mod_revision or written.revision)

    async def delete_key(self, scope: str, key: str, prev_revision: int | None = None) -> None:
        await self._state(lambda st: st.delete(scope, key, prev_revision=prev_revision))

    async def create_scope(self, scope: str) -> None:
        await self._state(lambda st: st.create_scope(scope))

    async def delete_scope(self, scope: str) -> None:
        await self._state(lambda st: st.delete_scope(scope))

    async def call(self, service: str, operation: str, body: bytes) -> AsyncIterator[ReplyPart]:
        from plantd.client import errors

        client = await self._get_client()
        try:
            # parts are yielded as they arrive (a long PARTIAL stream shows progress); the
            # caller knows the last one was the FINAL when the iterator ends
            index = 0
            async for frames in client.stream(service, operation.encode(), body):
                index += 1
                yield ReplyPart(tuple(frames), index)
        except errors.BrokerUnreachable as exc:
            await self._reset()
            raise Disconnected(str(exc) or "broker unreachable") from exc
        except errors.PlantdError as exc:
            raise ServiceError(str(exc) or type(exc).__name__) from exc

    async def _subscribe(self, endpoint: str) -> AsyncIterator[tuple[str, Any]]:
        from plantd.client import Subscriber

        sub = Subscriber(endpoint, topics=[""])
        try:
            while True:
                topic, doc = await sub.recv()
                yield topic, doc
        finally:
            sub.close()

    async def state_changes(self) -> AsyncIterator[StateChange]:
        async for topic, doc in self._subscribe(self.settings.state_bus):
            if isinstance(doc, Mapping):
                yield parse_state_change(topic, doc)

    async def log_records(self) -> AsyncIterator[LogRecord]:
        async for topic, doc in self._subscribe(self.settings.log_bus):
            if isinstance(doc, Mapping):
                yield parse_log_record(topic, doc)

    async def query_logs(self, limit: int = 500) -> list[LogRecord]:
        """The newest `limit` records, following the logger's pages (a page is cut by bytes,
        or short when the logger bounds a scan, and then says `more`)."""
        out: list[LogRecord] = []

        async def fetch(cursor: Any) -> tuple[None, bool, Any]:
            body = paging_body({}, cursor, min(LOG_PAGE_MAX, limit - len(out)))
            doc = await self._guard(lambda c: c.call(LOGGER_SERVICE, "query", body))
            data = state_reply(doc) if isinstance(doc, Mapping) else doc
            records = data.get("records", []) if isinstance(data, Mapping) else data
            for rec in records or []:
                if isinstance(rec, Mapping):
                    topic = f"{rec.get('service', '?')}.{rec.get('level', 'info')}"
                    out.append(parse_log_record(topic, rec))
            more, nxt = page_more(data)
            return None, more and len(out) < limit, nxt

        await follow_pages(fetch, LOG_HISTORY_PAGES)
        return sorted(out, key=lambda r: r.ts)

    async def whoami(self) -> Identity | None:
        """The console's principal as the broker passes it; None without an Identity service."""
        try:
            doc = await self._guard(lambda c: c.call(IDENTITY_SERVICE, "whoami", {}))
        except ServiceError as exc:
            if exc.code in ("unknown-service", "unavailable", "timeout"):
                return None
            raise
        data = state_reply(doc) if isinstance(doc, Mapping) else {}
        return Identity(
            data.get("principal"),
            tuple(str(r) for r in data.get("roles") or ()),
            bool(data.get("secure", True)),
        )

    async def key_history(self, scope: str, key: str) -> list[KeyChange]:
        """The newest audit rows of one key (oldest first), following the audit's pages."""
        rows: list[KeyChange] = []

        async def fetch(cursor: Any) -> tuple[None, bool, Any]:
            body = paging_body({"scope": scope, "key": key}, cursor, 1000)
            doc = await self._guard(lambda c: c.call(IDENTITY_SERVICE, "audit-list", body))
            data = state_reply(doc) if isinstance(doc, Mapping) else {}
            for r in data.get("rows") or []:
                rows.append(key_change(r))
            del rows[:-HISTORY_ROWS]
            more, nxt = page_more(data)
            return None, more, nxt

        await follow_pages(fetch, MAX_PAGES)
        return rows

    async def close(self) -> None:
        await self._reset()


def key_change(row: Mapping[str, Any]) -> KeyChange:
    """An audit row as the State view shows it."""
    return KeyChange(
        seq=_int(row.get("seq"), 0) or 0,
        ts=_float(row.get("ts")) or 0.0,
        principal=str(row.get("principal", "?")),
        operation=str(row.get("operation", "?")),
        outcome=str(row.get("outcome", "")),
        old=row.get("old"),
        new=row.get("new"),
        revision=None if row.get("revision") is None else _int(row.get("revision")),
    )


def decode_frames(frames: Sequence[bytes]) -> str:
    """Readable text for reply frames: pretty JSON when a frame parses, else text or hex."""
    lines: list[str] = []
    for frame in frames:
        try:
            text = frame.decode()
        except UnicodeDecodeError:
            lines.append(frame.hex(" "))
            continue
        try:
            lines.append(json.dumps(json.loads(text), indent=2, sort_keys=True))
        except ValueError:
            lines.append(text)
    return "\n".join(lines)
