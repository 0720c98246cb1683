"""Logs: the log bus live, filtered by level/service/text, flushed on a timer, gaps counted."""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Input, Label, Static

from plantd.tui.actions import bindings_for
from plantd.tui.logstore import LEVELS, LogFilter, LogStore
from plantd.tui.messages import ReloadRequested
from plantd.tui.screens.base import View
from plantd.tui.source import LogRecord
from plantd.tui.widgets.logview import LogView
from plantd.tui.widgets.picker import PickerDialog

FLUSH_HZ = 15  # 10-20 Hz: smooth to the eye, one render per burst instead of per record


class LogsView(View):
    BINDINGS = bindings_for("logs")

    def __init__(self, store: LogStore, tz: tzinfo | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.tz = tz
        self._status = ""

    def compose(self) -> ComposeResult:
        yield Static(id="log-filters")
        yield Input(
            placeholder="search text (Enter: apply, Esc: clear filters)",
            id="log-search",
            compact=True,
        )
        yield LogView(self.store, self.tz, id="log-view")
        yield Label(id="log-status")

    def on_mount(self) -> None:
        search = self.query_one("#log-search", Input)
        search.cursor_blink = False
        search.display = False
        self._render_filters()
        self.set_interval(1 / FLUSH_HZ, self.flush)

    def focus_main(self) -> None:
        self.query_one(LogView).focus()

    def flush(self) -> None:
        """Timer: move pending records into the view (skipped while a modal covers us)."""
        if self.app.screen is not self.screen:
            return
        added, evicted = self.store.drain()
        view = self.query_one(LogView)
        if added or evicted:
            view.records_changed(added, evicted)
        self._render_status(view)

    def _render_status(self, view: LogView) -> None:
        store = self.store
        parts = [f"{len(store.view)}/{len(store.records)} shown"]
        if store.missed:
            parts.append(f"MISSED {store.missed} (seq gaps)")
        if store.dropped:
            parts.append(f"DROPPED {store.dropped} (console behind)")
        parts.append("following" if view.following else f"PAUSED — {view.new_count} new (t: tail)")
        status = "  │  ".join(parts)
        if status != self._status:
            self._status = status
            warn = store.missed or store.dropped or not view.following
            self.query_one("#log-status", Label).update(
                Text(status, style="bold yellow" if warn else "dim")
            )

    def _render_filters(self) -> None:
        flt = self.store.filter
        text = Text()
        text.append("Level ≥ ", style="dim")
        text.append(flt.min_level.upper(), style="bold")
        text.append(" [l]   Service ", style="dim")
        text.append(flt.service or "all", style="bold")
        text.append(" [s]   Search ", style="dim")
        text.append(repr(flt.text) if flt.text else "—", style="bold")
        text.append(" [/]", style="dim")
        self.query_one("#log-filters", Static).update(text)

    def _apply(self, flt: LogFilter) -> None:
        self.store.set_filter(flt)
        self._render_filters()
        self.query_one(LogView).reset()
        self._status = ""
        self._render_status(self.query_one(LogView))

    def add_history(self, records: list[LogRecord]) -> int:
        count = self.store.prepend_history(records)
        self.query_one(LogView).reset()
        return count

    # ------------------------------------------------------------------ actions

    def action_search(self) -> None:
        search = self.query_one("#log-search", Input)
        search.display = True
        search.value = self.store.filter.text
        search.focus()

    @on(Input.Submitted, "#log-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        flt = self.store.filter
        self._apply(LogFilter(flt.min_level, flt.service, event.value.strip()))
        event.input.display = False
        self.query_one(LogView).focus()

    def action_cycle_level(self) -> None:
        flt = self.store.filter
        nxt = LEVELS[(LEVELS.index(flt.min_level) + 1) % len(LEVELS)]
        self._apply(LogFilter(nxt, flt.service, flt.text))

    def action_pick_service(self) -> None:
        options = [("*", "all services")] + [(s, s) for s in sorted(self.store.services)]

        def done(choice: str | None) -> None:
            if choice is None:
                return
            flt = self.store.filter
            self._apply(LogFilter(flt.min_level, None if choice == "*" else choice, flt.text))

        self.app.push_screen(
            PickerDialog("Show logs of", options, self.store.filter.service or "*"), done
        )

    def action_tail(self) -> None:
        self.query_one(LogView).follow()

    def action_clear(self) -> None:
        self.store.clear()
        self.query_one(LogView).reset()

    def action_clear_filters(self) -> None:
        self.query_one("#log-search", Input).display = False
        self._apply(LogFilter())
        self.query_one(LogView).focus()

    def action_history(self) -> None:
        self.post_message(ReloadRequested("log-history"))
