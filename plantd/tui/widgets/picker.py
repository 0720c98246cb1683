"""Pick one entry from a list (services for the log filter and the Call view)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class PickerDialog(ModalScreen[str | None]):
    """Returns the chosen option id, or None on Esc."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], current: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.options = options
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="picker"):
            yield Label(self.title_text, id="dialog-title")
            yield OptionList(*[Option(label, id=oid) for oid, label in self.options], id="picker")
            yield Label("Enter: choose   Esc: cancel", classes="hint")

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        picker.focus()
        for index, (oid, _) in enumerate(self.options):
            if oid == self.current:
                picker.highlighted = index

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
