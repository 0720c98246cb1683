"""Call: pick a service and operation, edit a JSON body, send, watch PARTIAL/FINAL replies."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, OptionList, RichLog, TextArea
from textual.widgets.option_list import Option

from plantd.tui.actions import bindings_for
from plantd.tui.messages import SendRequested
from plantd.tui.screens.base import View
from plantd.tui.source import ReplyPart, decode_frames
from plantd.tui.widgets.picker import PickerDialog

HISTORY_MAX = 50
# operations that only read: allowed from a --read-only console
READ_ONLY_OPERATIONS = frozenset(
    {
        "health",
        "status",
        "ping",
        "echo",
        "list-scopes",
        "list-keys",
        "state-get",
        "get",
        "query",
        "list",
        "describe",
        "info",
        "version",
    }
)


@dataclass(frozen=True, slots=True)
class CallEntry:
    service: str
    operation: str
    body: str

    @property
    def label(self) -> str:
        body = " ".join(self.body.split())
        return f"{self.service} {self.operation} {body}"[:60]


def is_read_only_call(service: str, operation: str) -> bool:
    return service.startswith("mmi.") or operation in READ_ONLY_OPERATIONS


class CallView(View):
    BINDINGS = bindings_for("call")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.services: list[str] = []
        self.history: list[CallEntry] = []
        self.busy = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="call-target"):
            yield Label("Service ", classes="field-label")
            yield Input(placeholder="org.plantd.State (F7: pick)", id="call-service", compact=True)
            yield Label(" Op ", classes="field-label")
            yield Input(placeholder="operation", id="call-op", compact=True)
        yield Label("Body (JSON)  F9/^S: send  F7: pick service  F8: resend", classes="section")
        yield TextArea("{}", id="call-body", compact=True, show_line_numbers=False)
        with Horizontal(id="call-bottom"):
            with Vertical(id="call-reply-pane"):
                yield Label("Reply", id="call-status", classes="section")
                yield RichLog(id="call-reply", wrap=True, markup=False, max_lines=2000)
            with Vertical(id="call-history-pane"):
                yield Label("History", classes="section")
                yield OptionList(id="call-history")

    def on_mount(self) -> None:
        for widget in self.query(Input):
            widget.cursor_blink = False
        self.query_one(TextArea).cursor_blink = False
        if self.read_only:
            self.query_one("#call-status", Label).update(
                Text(
                    "Reply   [RO: only read operations (health, list-*, get, query, mmi.*)]",
                    style="bold yellow",
                )
            )

    def focus_main(self) -> None:
        self.query_one("#call-service", Input).focus()

    def set_services(self, services: list[str]) -> None:
        if services != self.services:
            self.services = services
            self.query_one("#call-service", Input).suggester = SuggestFromList(
                services, case_sensitive=False
            )

    def prefill(self, service: str, operation: str = "", body: str | None = None) -> None:
        self.query_one("#call-service", Input).value = service
        if operation:
            self.query_one("#call-op", Input).value = operation
        if body is not None:
            self.query_one(TextArea).text = body
        self.query_one("#call-op", Input).focus()

    # ------------------------------------------------------------------ replies

    def call_started(self, entry: CallEntry) -> None:
        self.busy = True
        log = self.query_one(RichLog)
        log.clear()
        log.write(Text(f"→ {entry.service} {entry.operation}", style="bold"))
        self.query_one("#call-status", Label).update(Text("Reply — waiting…", style="yellow"))

    def reply_part(self, part: ReplyPart) -> None:
        log = self.query_one(RichLog)
        log.write(Text(f"── part {part.index}", style="dim"))
        log.write(decode_frames(part.frames))

    def call_finished(self, parts: int, elapsed: float, error: str) -> None:
        self.busy = False
        status = self.query_one("#call-status", Label)
        if error:
            self.query_one(RichLog).write(Text(f"✖ {error}", style="bold red"))
            status.update(Text(f"Reply — FAILED after {elapsed * 1000:.0f} ms", style="bold red"))
            return
        kinds = f"{parts - 1} PARTIAL + FINAL" if parts > 1 else "FINAL"
        status.update(Text(f"Reply — {kinds} in {elapsed * 1000:.1f} ms", style="bold green"))

    # ------------------------------------------------------------------ actions

    def _entry(self) -> CallEntry | None:
        service = self.query_one("#call-service", Input).value.strip()
        operation = self.query_one("#call-op", Input).value.strip()
        body = self.query_one(TextArea).text
        if not service:
            self.app.notify("Enter a service (F7 picks one)", severity="warning")
            return None
        return CallEntry(service, operation, body)

    def _send(self, entry: CallEntry) -> None:
        if self.busy:
            self.app.notify("A request is still running", severity="warning")
            return
        if self.read_only and not is_read_only_call(entry.service, entry.operation):
            self.app.notify(
                f"'{entry.operation}' may write; the console runs --read-only.",
                title="Read-only",
                severity="warning",
            )
            return
        text = entry.body.strip()
        if text:
            try:
                payload = json.dumps(json.loads(text), separators=(",", ":")).encode()
            except ValueError as exc:
                self.app.notify(f"Body is not valid JSON: {exc}", severity="error")
                return
        else:
            payload = b"{}"
        self._remember(entry)
        self.call_started(entry)
        self.post_message(SendRequested(entry.service, entry.operation, payload))

    def _remember(self, entry: CallEntry) -> None:
        self.history = [e for e in self.history if e != entry]
        self.history.insert(0, entry)
        del self.history[HISTORY_MAX:]
        options = self.query_one("#call-history", OptionList)
        options.clear_options()
        options.add_options([Option(e.label) for e in self.history])
        options.highlighted = 0

    def action_send(self) -> None:
        entry = self._entry()
        if entry is not None:
            self._send(entry)

    def action_resend(self) -> None:
        options = self.query_one("#call-history", OptionList)
        index = options.highlighted
        if index is None or index >= len(self.history):
            self.app.notify("History is empty", severity="warning")
            return
        entry = self.history[index]
        self.prefill(entry.service, entry.operation, entry.body)
        self._send(entry)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        entry = self.history[event.option_index]
        self.prefill(entry.service, entry.operation, entry.body)

    def action_pick_service(self) -> None:
        if not self.services:
            self.app.notify("No services known yet", severity="warning")
            return

        def done(choice: str | None) -> None:
            if choice:
                self.prefill(choice)

        current = self.query_one("#call-service", Input).value
        self.app.push_screen(
            PickerDialog("Call which service?", [(s, s) for s in self.services], current), done
        )

    def action_leave_input(self) -> None:
        """Inputs swallow letters and digits; Esc parks focus on the history list."""
        self.query_one("#call-history", OptionList).focus()

    def action_clear_reply(self) -> None:
        self.query_one(RichLog).clear()
