"""Input dialog for a key/value (or a scope name); Enter submits, Esc cancels."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


@dataclass(frozen=True, slots=True)
class EditResult:
    name: str
    value: str


class EditDialog(ModalScreen[EditResult | None]):
    """Asks for a name (key or scope) and/or a value; the value is JSON or plain text."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        *,
        name_label: str = "Key",
        name: str = "",
        name_editable: bool = True,
        value: str | None = "",
        hint: str = 'Value is JSON (1, true, "text", {...}); anything else is sent as text.',
    ) -> None:
        super().__init__()
        self.title_text = title
        self.name_label = name_label
        self.initial_name = name
        self.name_editable = name_editable
        self.initial_value = value
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            with Horizontal(classes="field"):
                yield Label(f"{self.name_label:<6}", classes="field-label")
                yield Input(
                    self.initial_name,
                    id="name",
                    compact=True,
                    disabled=not self.name_editable,
                    placeholder=self.name_label.lower(),
                )
            if self.initial_value is not None:
                with Horizontal(classes="field"):
                    yield Label("Value ", classes="field-label")
                    yield Input(self.initial_value, id="value", compact=True, placeholder="value")
                yield Label(self.hint, classes="hint")
            with Horizontal(id="dialog-buttons"):
                yield Button("OK (Enter)", id="ok", variant="primary", compact=True)
                yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        for widget in self.query(Input):
            widget.cursor_blink = False
        target = "#value" if self.initial_value is not None and not self.name_editable else "#name"
        self.query_one(target, Input).focus()

    def _result(self) -> EditResult | None:
        name = self.query_one("#name", Input).value.strip()
        values = self.query("#value").results(Input)
        value = next(iter(values)).value if self.initial_value is not None else ""
        if not name:
            self.notify(f"{self.name_label} must not be empty", severity="error")
            return None
        return EditResult(name, value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "name" and self.initial_value is not None:
            self.query_one("#value", Input).focus()
            return
        result = self._result()
        if result is not None:
            self.dismiss(result)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        result = self._result()
        if result is not None:
            self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)
