"""Help screen: every key of every view, generated from the action table."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from plantd.tui.actions import ACTIONS, VIEWS


def help_table(read_only: bool) -> Table:
    table = Table(box=None, padding=(0, 1), show_header=False, expand=True)
    table.add_column("key", style="bold cyan", no_wrap=True, width=14)
    table.add_column("action", ratio=1)
    for view, title in VIEWS.items():
        table.add_row(Text(title, style="bold underline"), "")
        for spec in ACTIONS:
            if spec.view != view:
                continue
            desc = Text(spec.description)
            if spec.write:
                if read_only:
                    desc.append("  [RO: disabled]", style="bold yellow")
                else:
                    desc.append("  (write, confirms)", style="dim")
            table.add_row(spec.key_display, desc)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close")]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="help"):
            yield Label("plantd console — keys", id="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(help_table(self.read_only))
                yield Static(
                    "Over SSH: F-keys and letters work everywhere; if Esc feels slow, "
                    "set ESCDELAY=25. Copy (y) uses OSC 52: enable clipboard access in your "
                    "terminal/tmux (set -g set-clipboard on).",
                    classes="hint",
                )
            yield Label("Esc / q: close   ↑↓ PgUp PgDn: scroll", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
