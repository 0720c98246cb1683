"""Typed messages between the I/O workers, the views and the app.

Workers never touch widgets: they post one of these and an `@on` handler in the app (or a view)
owns the resulting state change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from plantd.tui.keywindow import KeyQuery, PageResult, Step, WalkResult
from plantd.tui.source import (
    BrokerInfo,
    BrokerReach,
    Identity,
    KeyChange,
    KeyEntry,
    LogRecord,
    ReplyPart,
    ScopePage,
    ServiceInfo,
    StateChange,
    WorkerInfo,
)


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One state write as the operator confirmed it (old -> new, compare-and-set revision)."""

    kind: str  # "set" | "delete" | "create-scope" | "delete-scope"
    scope: str
    key: str = ""
    old: Any = None
    new: Any = None
    has_old: bool = False
    prev_revision: int | None = None

    @property
    def target(self) -> str:
        return f"{self.scope}/{self.key}" if self.key else self.scope


class ConnectionChanged(Message):
    """The poll loop's verdict on the broker connection."""

    def __init__(
        self,
        connected: bool,
        rtt: float | None = None,
        error: str = "",
        attempt: int = 0,
        brokers: list[BrokerReach] | None = None,
    ) -> None:
        super().__init__()
        self.connected = connected
        self.rtt = rtt
        self.error = error
        self.attempt = attempt
        #: every broker and whether it is reached (several brokers: shown in the header)
        self.brokers = brokers or []


class OverviewData(Message):
    """One poll of mmi.services / mmi.workers / mmi.broker (None: that extension failed)."""

    def __init__(
        self,
        services: list[ServiceInfo] | None,
        workers: list[WorkerInfo] | None,
        broker: BrokerInfo | None,
        polled_at: float,
    ) -> None:
        super().__init__()
        self.services = services
        self.workers = workers
        self.broker = broker
        self.polled_at = polled_at


class ScopesLoaded(Message):
    """One page of `list-scopes`; `after` None: the first page (the tree starts over)."""

    def __init__(self, page: ScopePage, after: str | None = None) -> None:
        super().__init__()
        self.page = page
        self.after = after


class MoreScopesRequested(Message):
    """The operator reached the end of the scope tree: load the page after `after`."""

    def __init__(self, after: str) -> None:
        super().__init__()
        self.after = after


class KeysWanted(Message):
    """The state view needs one fetch (a page or a keys-only walk) for its virtual table;
    `generation` ties the answer to the window that asked."""

    def __init__(self, query: KeyQuery, generation: int, step: Step) -> None:
        super().__init__()
        self.query = query
        self.generation = generation
        self.step = step


class KeysFetched(Message):
    """The answer to `KeysWanted`: a result, or the error to show in the view's title."""

    def __init__(
        self,
        query: KeyQuery,
        generation: int,
        result: PageResult | WalkResult | None,
        error: str = "",
    ) -> None:
        super().__init__()
        self.query = query
        self.generation = generation
        self.result = result
        self.error = error


class StateChanged(Message):
    """One state-bus event, applied in place without a reload."""

    def __init__(self, change: StateChange) -> None:
        super().__init__()
        self.change = change


class WriteRequested(Message):
    """A view asks for a write; the app confirms it, runs it and reports back.

    `lookup`: the view does not hold the key's page, so the app reads the key first and the
    confirm shows (and compare-and-sets against) what is stored."""

    def __init__(self, op: WriteOp, lookup: bool = False) -> None:
        super().__init__()
        self.op = op
        self.lookup = lookup


class WriteResolved(Message):
    """A write whose old value was read from the service: ready to confirm."""

    def __init__(self, op: WriteOp) -> None:
        super().__init__()
        self.op = op


class WriteFinished(Message):
    """Outcome of a write; a conflict carries the key as it is now (`current`, read after the
    conflict; `current_known` False when that read failed) so the operator sees what won."""

    def __init__(
        self,
        op: WriteOp,
        revision: int | None = None,
        error: str = "",
        conflict: bool = False,
        current_revision: int | None = None,
        current: KeyEntry | None = None,
        current_known: bool = False,
    ) -> None:
        super().__init__()
        self.op = op
        self.revision = revision
        self.error = error
        self.conflict = conflict
        self.current_revision = current_revision
        self.current = current
        self.current_known = current_known


class ReloadRequested(Message):
    """A view wants its data fetched again (scopes, a scope's keys, log history)."""

    def __init__(self, what: str, scope: str = "") -> None:
        super().__init__()
        self.what = what
        self.scope = scope


class SendRequested(Message):
    def __init__(self, service: str, operation: str, body: bytes) -> None:
        super().__init__()
        self.service = service
        self.operation = operation
        self.body = body


class ReplyReceived(Message):
    def __init__(self, call_id: int, part: ReplyPart) -> None:
        super().__init__()
        self.call_id = call_id
        self.part = part


class CallFinished(Message):
    def __init__(self, call_id: int, parts: int, elapsed: float, error: str = "") -> None:
        super().__init__()
        self.call_id = call_id
        self.parts = parts
        self.elapsed = elapsed
        self.error = error


class LogHistoryLoaded(Message):
    def __init__(self, records: list[LogRecord], error: str = "", quiet: bool = False) -> None:
        super().__init__()
        self.records = records
        self.error = error
        self.quiet = quiet  # automatic load on connect: no toast when the logger is absent


class CallServiceRequested(Message):
    """Overview -> Call: prefill the service of the selected row."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service


class IdentityLoaded(Message):
    """What org.plantd.Identity says the console is (None: no Identity service)."""

    def __init__(self, identity: Identity | None) -> None:
        super().__init__()
        self.identity = identity


class HistoryWanted(Message):
    """The State view's cursor is on a key: fetch who changed it (the audit)."""

    def __init__(self, scope: str, key: str) -> None:
        super().__init__()
        self.scope = scope
        self.key = key


class HistoryLoaded(Message):
    """A key's newest audit rows (oldest first); ``error`` when they could not be read."""

    def __init__(self, scope: str, key: str, changes: list[KeyChange], error: str = "") -> None:
        super().__init__()
        self.scope = scope
        self.key = key
        self.changes = changes
        self.error = error
