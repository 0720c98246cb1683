"""The plantd operator console: tabs, connection indicator, and the workers that do all I/O.

The app is the controller: Textual workers talk to the `DataSource` and post typed messages;
`@on` handlers here own every state change and hand data to the views, which only render.
A worker failure becomes a notification or the banner, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import tzinfo
from functools import partial, wraps
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from plantd.tui.actions import ACTIONS, VIEWS, ActionSpec, specs_for
from plantd.tui.keywindow import KeyQuery, LoadPage, Step, load_page, walk
from plantd.tui.logstore import LogStore
from plantd.tui.messages import (
    CallFinished,
    CallServiceRequested,
    ConnectionChanged,
    HistoryLoaded,
    HistoryWanted,
    IdentityLoaded,
    KeysFetched,
    KeysWanted,
    LogHistoryLoaded,
    MoreScopesRequested,
    OverviewData,
    ReloadRequested,
    ReplyReceived,
    ScopesLoaded,
    SendRequested,
    StateChanged,
    WriteFinished,
    WriteOp,
    WriteRequested,
    WriteResolved,
)
from plantd.tui.model import format_value
from plantd.tui.screens.base import View
from plantd.tui.screens.call import CallView
from plantd.tui.screens.logs import LogsView
from plantd.tui.screens.overview import OverviewView
from plantd.tui.screens.state import StateView
from plantd.tui.source import Conflict, DataSource, Disconnected, SourceError
from plantd.tui.widgets.confirm import ConfirmDialog, describe
from plantd.tui.widgets.conflict import ConflictDialog
from plantd.tui.widgets.connection import Banner, ConnectionBar
from plantd.tui.widgets.help import HelpScreen
from plantd.tui.widgets.message import MessageDialog

TABS = (
    ("overview", "Overview", "F2"),
    ("state", "State", "F3"),
    ("logs", "Logs", "F4"),
    ("call", "Call", "F5"),
)
BACKOFF = (1.0, 2.0, 3.0, 5.0)  # reconnect delays: the banner appears and clears within seconds
LOG_YIELD_EVERY = 200  # let the UI breathe during a log burst


def _app_bindings() -> list[BindingType]:
    out: list[BindingType] = []
    for spec in specs_for("app"):
        show = spec.action in ("help", "quit")
        out.append(Binding(spec.keys, spec.action, spec.footer, show=show))
    return out


def while_mounted(handler: Callable[..., Any]) -> Callable[..., Any]:
    """For handlers of worker messages: one can still be delivered while the app removes
    its widgets on exit, and then there is nothing left to update. Only then is a missing
    widget ignored; at any other time it is a bug and raises."""

    @wraps(handler)
    def guarded(self: PlantApp, *args: Any, **kwargs: Any) -> Any:
        try:
            return handler(self, *args, **kwargs)
        except NoMatches:
            if self._exit or not self.is_running:
                return None
            raise

    return guarded


class PlantApp(App[None]):
    """`plant tui`. Inject `source`, `clock` and `tz` to run it against fakes in tests."""

    CSS_PATH = "app.tcss"
    TITLE = "plantd"
    BINDINGS: ClassVar[list[BindingType]] = _app_bindings()
    VERTICAL_BREAKPOINTS: list[tuple[int, str]] | None = [(0, "-short"), (36, "-tall")]

    def __init__(
        self,
        source: DataSource,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        tz: tzinfo | None = None,
        poll_interval: float = 1.0,
        log_capacity: int = 10_000,
        animations: bool = True,
    ) -> None:
        super().__init__()
        self.source = source
        self.read_only = read_only
        self.clock = clock
        self.monotonic = monotonic
        self.tz = tz
        self.poll_interval = poll_interval
        self.log_store = LogStore(log_capacity)
        self.connected: bool | None = None
        #: why writes are off ("" with --read-only: the views say that); set for a viewer
        self.read_only_reason = ""
        #: org.plantd.Identity answered: the State view shows each key's change history
        self.audit_available = False
        self._call_id = 0
        if not animations:
            self.animation_level = "none"

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield ConnectionBar(self.source.endpoint, self.read_only, id="connection")
        banner = Banner(id="banner")
        banner.display = False
        yield banner
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane(f"{TABS[0][1]} {TABS[0][2]}", id="overview"):
                yield OverviewView(id="overview-view")
            with TabPane(f"{TABS[1][1]} {TABS[1][2]}", id="state"):
                yield StateView(self.tz, id="state-view")
            with TabPane(f"{TABS[2][1]} {TABS[2][2]}", id="logs"):
                yield LogsView(self.log_store, self.tz, id="logs-view")
            with TabPane(f"{TABS[3][1]} {TABS[3][2]}", id="call"):
                yield CallView(id="call-view")
        yield Footer()

    def on_mount(self) -> None:
        self.poll_loop()
        self.state_bus_loop()
        self.log_bus_loop()
        self.load_scopes()
        self._focus_view("overview")

    def view(self, name: str) -> View:
        return self.query_one(f"#{name}-view", View)

    def _focus_view(self, name: str) -> None:
        self.view(name).focus_main()

    # ------------------------------------------------------------------ actions

    def action_show_tab(self, tab: str) -> None:
        tabbed = self.query_one(TabbedContent)
        if tabbed.active != tab:
            tabbed.active = tab
        # focus the new view in the same tick: if the old pane's focused widget is hidden
        # first, Textual moves focus to a neighbour in that pane, which re-activates it
        self._focus_view(tab)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.read_only))

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Tab clicked with the mouse: move focus into it unless it already is."""
        pane = event.pane
        focused = self.focused
        if pane.id and (focused is None or pane not in focused.ancestors):
            self._focus_view(pane.id)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every action of every view in the palette; write actions say when they are off."""
        yield from super().get_system_commands(screen)
        for spec in ACTIONS:
            if spec.action == "command_palette":
                continue
            title = f"{VIEWS[spec.view]}: {spec.description}"
            if spec.write and self.read_only:
                title += " (read-only: disabled)"
            yield SystemCommand(title, f"key: {spec.key_display}", partial(self.run_spec, spec))

    async def run_spec(self, spec: ActionSpec) -> None:
        """Run an action from the palette as if its key had been pressed in its view."""
        if spec.view == "app":
            await self.run_action(spec.action)
            return
        self.action_show_tab(spec.view)
        view = self.view(spec.view)
        if spec.write and self.read_only:
            view.action_refuse(spec.action)
            return
        await self.run_action(spec.action, view)

    # ------------------------------------------------------------------ polling

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll_loop(self) -> None:
        """Poll the broker; re-arm only after a poll finished, so polls never overlap."""
        failures = 0
        while True:
            try:
                rtt = await self.source.ping()
            except Exception as exc:
                failures += 1
                delay = BACKOFF[min(failures - 1, len(BACKOFF) - 1)]
                reason = (
                    str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                )
                self.post_message(
                    ConnectionChanged(
                        False, error=reason, attempt=failures, brokers=self.source.brokers()
                    )
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.post_message(ConnectionChanged(True, rtt=rtt, brokers=self.source.brokers()))
            results = await asyncio.gather(
                self.source.services(),
                self.source.workers(),
                self.source.broker_info(),
                return_exceptions=True,
            )
            services, workers, broker = (
                None if isinstance(r, BaseException) else r for r in results
            )
            self.post_message(OverviewData(services, workers, broker, self.monotonic()))  # type: ignore[arg-type]
            await asyncio.sleep(self.poll_interval)

    @on(ConnectionChanged)
    @while_mounted
    def _connection_changed(self, event: ConnectionChanged) -> None:
        bar = self.query_one(ConnectionBar)
        banner = self.query_one(Banner)
        was = self.connected
        self.connected = event.connected
        bar.connected = event.connected
        bar.rtt = event.rtt
        bar.brokers = event.brokers
        if event.connected:
            banner.hide()
            if was is not True:
                self.load_identity()  # who the broker says we are, again after a reconnect
            if was is None:
                self.load_log_history(quiet=True)  # older records, if the logger runs
            if was is False:
                self.notify("Broker is back; views reloaded.", title="Reconnected")
                self.load_scopes()
                self.query_one(StateView).reload_keys()
        else:
            delay = BACKOFF[min(event.attempt - 1, len(BACKOFF) - 1)]
            banner.show_disconnected(self.source.endpoint, event.error, event.attempt, delay)

    @on(OverviewData)
    @while_mounted
    def _overview_data(self, event: OverviewData) -> None:
        self.query_one(OverviewView).show(event, event.polled_at)
        if event.services is not None:
            self.query_one(CallView).set_services([s.name for s in event.services])
        bar = self.query_one(ConnectionBar)
        bar.updated = self._clock_text()

    def _clock_text(self) -> str:
        from datetime import datetime

        now = self.clock()
        moment = datetime.fromtimestamp(now, tz=self.tz) if self.tz else datetime.fromtimestamp(now)
        return moment.strftime("%H:%M:%S")

    @on(ReloadRequested)
    def _reload(self, event: ReloadRequested) -> None:
        if event.what == "overview":
            self.poll_loop()
        elif event.what == "scopes":
            self.load_scopes()
        elif event.what == "keys" and event.scope:
            self.query_one(StateView).reload_keys()
        elif event.what == "log-history":
            self.load_log_history()

    # ------------------------------------------------------------------ state

    @work(exclusive=True, group="scopes", exit_on_error=False)
    async def load_scopes(self, after: str | None = None) -> None:
        """One page of scope names (the first, or the one after `after`)."""
        try:
            page = await self.source.list_scopes_page(after=after)
            self.post_message(ScopesLoaded(page, after))
        except Disconnected:
            pass  # the banner already says so; reconnect reloads
        except SourceError as exc:
            self.notify(f"Cannot list scopes: {exc}", title="State", severity="error")

    @work(exclusive=True, group="keys", exit_on_error=False)
    async def fetch_keys(self, query: KeyQuery, generation: int, step: Step) -> None:
        """One step of the virtual key table: a page with values, or a keys-only walk.
        Exclusive: a newer step (the operator scrolled on) cancels an older one."""
        try:
            if isinstance(step, LoadPage):
                result: Any = await load_page(self.source, query, step)
            else:
                result = await walk(self.source, query, step)
            self.post_message(KeysFetched(query, generation, result))
        except Disconnected:
            pass
        except SourceError as exc:
            self.post_message(KeysFetched(query, generation, None, str(exc)))

    @work(group="statebus", exit_on_error=False)
    async def state_bus_loop(self) -> None:
        """Apply state-bus events as they come; resubscribe after a failure."""
        while True:
            try:
                async for change in self.source.state_changes():
                    self.post_message(StateChanged(change))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning(f"state bus: {exc!r}")
            await asyncio.sleep(2.0)

    @on(ScopesLoaded)
    @while_mounted
    def _scopes_loaded(self, event: ScopesLoaded) -> None:
        self.query_one(StateView).scopes_loaded(event)

    @on(MoreScopesRequested)
    def _more_scopes(self, event: MoreScopesRequested) -> None:
        self.load_scopes(event.after)

    @on(KeysWanted)
    def _keys_wanted(self, event: KeysWanted) -> None:
        self.fetch_keys(event.query, event.generation, event.step)

    @on(KeysFetched)
    @while_mounted
    def _keys_fetched(self, event: KeysFetched) -> None:
        self.query_one(StateView).keys_fetched(event)

    @on(StateChanged)
    @while_mounted
    def _state_changed(self, event: StateChanged) -> None:
        self.query_one(StateView).apply_change(event.change)

    @on(WriteRequested)
    def _write_requested(self, event: WriteRequested) -> None:
        if self.read_only:  # last line of defence; the views already refuse
            why = self.read_only_reason or "the console runs --read-only"
            self.notify(f"Not written: {why}.", title="Read-only", severity="warning")
            return
        if event.lookup:
            self.resolve_old(event.op)
            return
        self._confirm(event.op)

    @work(group="write", exit_on_error=False)
    async def resolve_old(self, op: WriteOp) -> None:
        """Read the key the view does not hold, so the confirm shows what it replaces and the
        write compare-and-sets against it (a key on an unloaded page is never overwritten
        blindly)."""
        try:
            current = await self.source.get_key(op.scope, op.key)
        except SourceError as exc:
            self.post_message(WriteFinished(op, error=f"cannot read the key first: {exc}"))
            return
        if current is not None:
            op = replace(op, old=current.value, has_old=True, prev_revision=current.mod_revision)
        else:
            op = replace(op, prev_revision=0)  # create only if it is still absent
        self.post_message(WriteResolved(op))

    @on(WriteResolved)
    def _write_resolved(self, event: WriteResolved) -> None:
        self._confirm(event.op)

    def _confirm(self, op: WriteOp) -> None:
        def confirmed(ok: bool | None) -> None:
            if ok:
                self.run_write(op)
            else:
                self.notify(f"{op.target}: nothing written.", title="Cancelled")

        self.push_screen(ConfirmDialog(op), confirmed)

    @work(group="write", exit_on_error=False)
    async def run_write(self, op: WriteOp) -> None:
        try:
            revision: int | None = None
            if op.kind == "set":
                revision = await self.source.set_key(op.scope, op.key, op.new, op.prev_revision)
            elif op.kind == "delete":
                await self.source.delete_key(op.scope, op.key, op.prev_revision)
            elif op.kind == "create-scope":
                await self.source.create_scope(op.scope)
            elif op.kind == "delete-scope":
                await self.source.delete_scope(op.scope)
            self.post_message(WriteFinished(op, revision=revision))
        except Conflict as exc:
            current, known = None, False
            if op.key:
                try:  # what won, for the dialog; the write itself stays refused
                    current, known = await self.source.get_key(op.scope, op.key), True
                except SourceError:
                    pass
            self.post_message(
                WriteFinished(
                    op,
                    error=str(exc),
                    conflict=True,
                    current_revision=exc.revision,
                    current=current,
                    current_known=known,
                )
            )
        except SourceError as exc:
            self.post_message(WriteFinished(op, error=str(exc)))

    @on(WriteFinished)
    @while_mounted
    def _write_finished(self, event: WriteFinished) -> None:
        op = event.op
        if event.conflict:
            # no automatic reload: the dialog shows what won and the operator decides
            scope = op.scope

            def reload(ok: bool | None) -> None:
                if ok and self.query_one(StateView).scope == scope:
                    self.query_one(StateView).reload_keys()

            self.push_screen(
                ConflictDialog(
                    op,
                    event.current,
                    current_known=event.current_known,
                    conflict_revision=event.current_revision,
                ),
                reload,
            )
            return
        if op.kind in ("create-scope", "delete-scope"):
            self.load_scopes()
        elif self.query_one(StateView).scope == op.scope:
            self.query_one(StateView).reload_keys()
        if event.error:
            title = "Not authorized" if event.error.startswith("not authorized") else "Write failed"
            self.push_screen(MessageDialog(title, _stack(Text(event.error + "\n"), op)))
        else:
            what = {
                "set": "set",
                "delete": "deleted",
                "create-scope": "created",
                "delete-scope": "deleted",
            }[op.kind]
            rev = f" (rev {event.revision})" if event.revision else ""
            value = f" = {format_value(op.new, 40)}" if op.kind == "set" else ""
            self.notify(f"{op.target}{value}{rev}", title=f"State {what}")

    # ------------------------------------------------------------------ identity

    @work(exclusive=True, group="identity", exit_on_error=False)
    async def load_identity(self) -> None:
        try:
            identity = await self.source.whoami()
        except SourceError:
            identity = None  # no Identity service to ask: nothing to show
        self.post_message(IdentityLoaded(identity))

    @on(IdentityLoaded)
    @while_mounted
    def _identity_loaded(self, event: IdentityLoaded) -> None:
        """The header names the principal and its roles; a viewer's writes are disabled."""
        identity = event.identity
        self.audit_available = identity is not None
        bar = self.query_one(ConnectionBar)
        bar.who = identity.label if identity is not None else ""
        if identity is not None and not identity.may_write and not self.read_only:
            self.read_only = True
            self.read_only_reason = f"{identity.principal} may only read ({identity.label})"
            bar.read_only = True
            bar.refresh()
            self.refresh_bindings()

    @on(HistoryWanted)
    def _history_wanted(self, event: HistoryWanted) -> None:
        self.load_history(event.scope, event.key)

    @work(exclusive=True, group="history", exit_on_error=False)
    async def load_history(self, scope: str, key: str) -> None:
        """Who changed the key (exclusive: the cursor moving on cancels the older fetch)."""
        try:
            changes = await self.source.key_history(scope, key)
        except SourceError as exc:
            self.post_message(HistoryLoaded(scope, key, [], str(exc)))
            return
        self.post_message(HistoryLoaded(scope, key, changes))

    @on(HistoryLoaded)
    @while_mounted
    def _history_loaded_for_key(self, event: HistoryLoaded) -> None:
        self.query_one(StateView).show_history(event)

    # ------------------------------------------------------------------ logs

    @work(group="logbus", exit_on_error=False)
    async def log_bus_loop(self) -> None:
        """Push bus records into the store; the Logs view flushes them on its timer."""
        store = self.log_store
        while True:
            try:
                count = 0
                async for record in self.source.log_records():
                    store.push(record)
                    count += 1
                    if count % LOG_YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning(f"log bus: {exc!r}")
            await asyncio.sleep(2.0)

    @work(exclusive=True, group="loghistory", exit_on_error=False)
    async def load_log_history(self, quiet: bool = False) -> None:
        try:
            records = await self.source.query_logs(self.log_store.capacity // 2)
        except SourceError as exc:
            self.post_message(LogHistoryLoaded([], str(exc), quiet))
            return
        self.post_message(LogHistoryLoaded(records, quiet=quiet))

    @on(LogHistoryLoaded)
    @while_mounted
    def _history_loaded(self, event: LogHistoryLoaded) -> None:
        if event.error:
            if not event.quiet:
                self.notify(f"Logger service: {event.error}", title="History", severity="warning")
            return
        added = self.query_one(LogsView).add_history(event.records) if event.records else 0
        if not event.quiet or added:
            self.notify(f"{added} older records loaded", title="History")

    # ------------------------------------------------------------------ call

    @on(SendRequested)
    def _send_requested(self, event: SendRequested) -> None:
        self._call_id += 1
        self.run_call(self._call_id, event.service, event.operation, event.body)

    @work(exclusive=True, group="call", exit_on_error=False)
    async def run_call(self, call_id: int, service: str, operation: str, body: bytes) -> None:
        clock = self.monotonic  # injected: snapshots show a stable elapsed time
        start = clock()
        parts = 0
        try:
            async for part in self.source.call(service, operation, body):
                parts += 1
                self.post_message(ReplyReceived(call_id, part))
        except SourceError as exc:
            self.post_message(CallFinished(call_id, parts, clock() - start, str(exc)))
            return
        error = "" if parts else "no reply"
        self.post_message(CallFinished(call_id, parts, clock() - start, error))

    @on(ReplyReceived)
    @while_mounted
    def _reply(self, event: ReplyReceived) -> None:
        if event.call_id == self._call_id:
            self.query_one(CallView).reply_part(event.part)

    @on(CallFinished)
    @while_mounted
    def _call_finished(self, event: CallFinished) -> None:
        if event.call_id == self._call_id:
            self.query_one(CallView).call_finished(event.parts, event.elapsed, event.error)

    @on(CallServiceRequested)
    def _call_service(self, event: CallServiceRequested) -> None:
        self.action_show_tab("call")
        self.query_one(CallView).prefill(event.service)

    # ------------------------------------------------------------------ failures

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Last resort: an unexpected worker error is a notification, never a traceback."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(
                f"{event.worker.name}: {type(error).__name__}: {error}",
                title="Internal error",
                severity="error",
                timeout=10,
            )

    async def on_unmount(self) -> None:
        try:
            await asyncio.wait_for(self.source.close(), 1.0)
        except Exception:
            pass


def _stack(first: Text, op: WriteOp) -> Any:
    from rich.console import Group

    return Group(first, describe(op))
